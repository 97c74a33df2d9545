"""Bad input through the real CLI: one clear line on stderr, exit code 2, no traceback, nothing lost."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_sparsify_folder


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(" ".join(["In the beginning was the word, and the word was with the people."] * 1000))
    return path


def _sparsify_folder(root: Path, hookpoint: str, d_in: int, latents: int = 32, k: int = 4) -> Path:
    write_sparsify_folder(root / hookpoint, d_in=d_in, num_latents=latents, k=k)
    return root / hookpoint


def _lantern(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lantern.cli", *args], capture_output=True, text=True, timeout=600)


def _assert_one_clear_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, done.stderr
    text = " ".join(done.stderr.split())
    for needle in needles:
        assert needle in text, text


def _cache(tmp_path: Path, model_dir: Path, corpus: Path, coder: Path | str, layer: int = 1) -> subprocess.CompletedProcess:
    return _lantern("cache", "--run-dir", str(tmp_path / "run"), "--model", str(model_dir), "--corpus", str(corpus),
                    "--coders", str(coder), "--tokens", "512", "--layer", str(layer))


def test_unknown_hookpoint_lists_valid_ones(tmp_path, model_dir, corpus_file):
    coder = _sparsify_folder(tmp_path / "coders", "layers.99", d_in=64)
    _assert_one_clear_line(_cache(tmp_path, model_dir, corpus_file, coder), "'layers.99' does not exist", "Valid:")


def test_coder_width_mismatch(tmp_path, model_dir, corpus_file):
    coder = _sparsify_folder(tmp_path / "coders", "layers.1", d_in=640)
    done = _cache(tmp_path, model_dir, corpus_file, coder)
    _assert_one_clear_line(done, "expects d_in=640", "width 64")
    assert not list((tmp_path / "run" / "cache").glob("*/manifest.json"))


def test_coder_folder_missing_file(tmp_path, model_dir, corpus_file):
    coder = _sparsify_folder(tmp_path / "coders", "layers.1", d_in=64)
    (coder / "sae.safetensors").unlink()
    _assert_one_clear_line(_cache(tmp_path, model_dir, corpus_file, coder), "lacks sae.safetensors")


def test_neuron_layer_out_of_range(tmp_path, model_dir, corpus_file):
    _assert_one_clear_line(_cache(tmp_path, model_dir, corpus_file, "neurons", layer=6), "--layer 6 does not exist")


def test_empty_corpus(tmp_path, model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _assert_one_clear_line(_cache(tmp_path, model_dir, empty, "neurons"), "empty")


def test_missing_corpus_file(tmp_path, model_dir):
    _assert_one_clear_line(_cache(tmp_path, model_dir, tmp_path / "nope.txt", "neurons"), "nope.txt")


def test_server_refusing_connections_keeps_earlier_stages(tmp_path, model_dir, corpus_file):
    coder = _sparsify_folder(tmp_path / "coders", "layers.1", d_in=64)
    run = tmp_path / "run"
    done = _lantern("cache", "--run-dir", str(run), "--model", str(model_dir), "--corpus", str(corpus_file),
                    "--coders", str(coder), "--tokens", "8192", "--latents", "2")
    assert done.returncode == 0, done.stderr
    assert _lantern("records", "--run-dir", str(run)).returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before the call: nothing listens there
    done = _lantern("explain", "--run-dir", str(run), "--llm-url", f"http://127.0.0.1:{port}/v1", "--llm-model", "m")
    _assert_one_clear_line(done, "refuses connections")
    assert (run / "cache" / "layers_1" / "manifest.json").exists()
    assert (run / "records" / "layers_1.parquet").exists()


def test_too_few_tokens_for_any_record(tmp_path, model_dir, corpus_file):
    coder = _sparsify_folder(tmp_path / "coders", "layers.1", d_in=64)
    assert _cache(tmp_path, model_dir, corpus_file, coder).returncode == 0
    _assert_one_clear_line(_lantern("records", "--run-dir", str(tmp_path / "run")), "no latent", "--tokens")


def test_not_a_run_directory(tmp_path):
    _assert_one_clear_line(_lantern("records", "--run-dir", str(tmp_path)), "not a lantern run directory")


def test_an_existing_run_refuses_other_settings(tmp_path):
    from lantern.config import RunConfig

    RunConfig(run_dir=str(tmp_path / "run"), model="some/model", tokens=1000).save()
    done = _lantern("cache", "--run-dir", str(tmp_path / "run"), "--model", "other/model", "--tokens", "1000")
    _assert_one_clear_line(done, "existing run made with other settings", "--model 'other/model'",
                           "(the run has 'some/model')", "Use another --run-dir")
    assert RunConfig.load(tmp_path / "run").model == "some/model"  # nothing was changed


def test_unknown_llm_backend_is_a_clear_error(tmp_path):
    from lantern.config import RunConfig

    RunConfig(run_dir=str(tmp_path / "run")).save()
    done = _lantern("explain", "--run-dir", str(tmp_path / "run"), "--llm-backend", "gpt")
    _assert_one_clear_line(done, "unknown LLM backend 'gpt'")


def test_executor_options_are_checked(tmp_path):
    from lantern.config import RunConfig

    RunConfig(run_dir=str(tmp_path / "run")).save()
    run = ["records", "--run-dir", str(tmp_path / "run")]
    _assert_one_clear_line(_lantern(*run, "--executor", "spark"), "unknown executor 'spark'", "local, ray")
    _assert_one_clear_line(_lantern(*run, "--ray-address", "127.0.0.1:6379"), "--ray-address needs --executor ray")
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _assert_one_clear_line(_lantern(*run, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"),
                           f"no Ray cluster at 127.0.0.1:{port}", "ray start --head")


def test_every_llm_option_takes_effect_or_is_refused(tmp_path):
    """Audit defect: --llm-concurrency, --llm-api, --llm-prompt-logprobs and --llm-key-env were silently ignored
    unless --llm-url, --llm-model or --llm-backend came with them."""
    from lantern.config import LLMConfig, RunConfig
    from lantern.configure import with_llm_options
    from lantern.errors import LanternError

    server = LLMConfig(url="http://127.0.0.1:9/v1", model="m")
    assert with_llm_options(server, api="chat").api == "chat"  # alone, on the run's saved server
    changed = with_llm_options(server, concurrency=3, prompt_logprobs=True, api_key_env="MY_KEY", outage_wait=5.0)
    assert (changed.concurrency, changed.prompt_logprobs, changed.api_key_env, changed.outage_wait, changed.url) == (
        3, True, "MY_KEY", 5.0, server.url)
    assert with_llm_options(server) == server  # nothing given: nothing changes
    chat = with_llm_options(server, api="chat")
    assert with_llm_options(chat, url=server.url, backend="auto").api == "chat"  # the run's own LLM again: kept
    assert with_llm_options(server, model="embedded") == LLMConfig(model="embedded")  # another LLM: the defaults
    with pytest.raises(LanternError, match=r"--llm-concurrency only apply to an HTTP server"):
        with_llm_options(LLMConfig(), concurrency=4)
    with pytest.raises(LanternError, match=r"--llm-api must be completions or chat"):
        with_llm_options(server, api="chatty")

    RunConfig(run_dir=str(tmp_path / "run")).save()
    done = _lantern("explain", "--run-dir", str(tmp_path / "run"), "--llm-concurrency", "4", "--llm-api", "chat")
    _assert_one_clear_line(done, "--llm-api, --llm-concurrency only apply to an HTTP server", "in-process (llama.cpp")
    assert RunConfig.load(tmp_path / "run").llm == LLMConfig()  # nothing was changed
    RunConfig(run_dir=str(tmp_path / "served"), llm=server).save()
    done = _lantern("explain", "--run-dir", str(tmp_path / "served"), "--llm-api", "chat", "--llm-concurrency", "2",
                    "--llm-wait", "0.1")
    saved = RunConfig.load(tmp_path / "served").llm
    assert (saved.api, saved.concurrency, saved.url) == ("chat", 2, server.url)  # taken, and saved for Ray workers


def test_set_changes_typed_settings_and_refuses_what_it_cannot(tmp_path):
    """Test-set sizes and every other record, explain and score setting from the command line (audit: the
    per-latent intervals at the defaults are wide and the sizes had no flag)."""
    from lantern.config import RunConfig
    from lantern.configure import with_settings
    from lantern.errors import LanternError

    cfg = with_settings(RunConfig(run_dir=str(tmp_path / "run")),
                        ["records.n_test_per_decile=3", "records.explain_sampling=quantiles",
                         "explainer.show_activations=true", "scoring.intervention_targets=0.5,2"])
    assert (cfg.records.n_test_per_decile, cfg.records.explain_sampling) == (3, "quantiles")
    assert cfg.explainer.show_activations is True and cfg.scoring.intervention_targets == (0.5, 2.0)
    assert with_settings(cfg, ["scoring.embedding_layer=4"]).scoring.embedding_layer == 4  # an `int | None` setting
    assert with_settings(cfg, ["scoring.embedding_layer=none"]).scoring.embedding_layer is None
    for bad, needle in [("records.n_tests=2", "records has no setting 'n_tests'"),
                        ("n_test_per_decile=2", "expected section.name=value"),
                        ("records.n_test_per_decile=two", "expected int"),
                        ("records.n_test_per_decile=-1", "must not be negative"),
                        ("records.explain_sampling=best", "unknown explain_sampling"),
                        ("records.ctx_len=9999", "do not fit sequences")]:
        with pytest.raises(LanternError, match=needle):
            with_settings(RunConfig(run_dir=str(tmp_path / "run")), [bad])
    with pytest.raises(LanternError, match="already has records built"):
        with_settings(RunConfig(run_dir=str(tmp_path / "run")), ["records.n_test_per_decile=2"], records_built=True)

    RunConfig(run_dir=str(tmp_path / "run")).save()
    done = _lantern("records", "--run-dir", str(tmp_path / "run"), "--set", "records.n_tests=2")
    _assert_one_clear_line(done, "records has no setting 'n_tests'", "n_test_per_decile")
    (tmp_path / "run" / "records").mkdir()
    (tmp_path / "run" / "records" / "sae.parquet").write_bytes(b"")
    done = _lantern("records", "--run-dir", str(tmp_path / "run"), "--set", "records.n_test_per_decile=2")
    _assert_one_clear_line(done, "already has records built", "use a new --run-dir")
    assert RunConfig.load(tmp_path / "run").records.n_test_per_decile == 1  # nothing was changed


def test_record_and_explainer_flags_are_saved_like_set(tmp_path):
    """The ablations' settings have their own flags on `records`, `explain`, `run` and `sweep`; they are checked
    and saved as `--set` is, and a new context length keeps centred windows centred."""
    from lantern.config import RunConfig

    RunConfig(run_dir=str(tmp_path / "run")).save()
    done = _lantern("records", "--run-dir", str(tmp_path / "run"), "--explain-sampling", "wrong")
    _assert_one_clear_line(done, "unknown explain_sampling 'wrong'")
    done = _lantern("explain", "--run-dir", str(tmp_path / "run"), "--show-activations", "--mark-threshold", "0.5",
                    "--explainer", "nope")
    _assert_one_clear_line(done, "nope")
    assert RunConfig.load(tmp_path / "run").explainer.show_activations is False  # refused: nothing saved
    done = _lantern("sweep", "--sweep-dir", str(tmp_path / "sweep"), "--ctx-len", "64", "--explain-examples", "12",
                    "--test-per-decile", "2", "--random-negatives", "3", "--similar-negatives", "0",
                    "--neighbour-negatives", "5", "--validation-per-decile", "1", "--show-activations",
                    "--vary", "records.explain_sampling=top,quantiles", "--dry-run")
    assert done.returncode == 0, done.stderr
    # 9 latents (3 coders x 3) x 2 variants x (detection: 20 test windows + 8 negatives; fuzzing: 2 x 20): the
    # count reads --test-per-decile and the three negatives flags; one record set per explain sampling
    text = " ".join(done.stderr.split())
    assert "2 variant(s) × 9 latents: 2 record set(s), 18 explanations, ~1,224 scoring calls" in text, text
    # `records` saves its flags before it builds (here it then stops: the run has no cache)
    _lantern("records", "--run-dir", str(tmp_path / "run"), "--explain-sampling", "random", "--ctx-len", "16")
    saved = RunConfig.load(tmp_path / "run").records
    assert (saved.explain_sampling, saved.ctx_len, saved.tokens_before) == ("random", 16, 8)


def test_every_command_and_option_says_what_it_does():
    """`lantern --help` lists the stages in pipeline order, then the tools; no option is left without help."""
    import typer

    from lantern.cli import app

    group = typer.main.get_command(app)
    assert list(group.commands) == ["run", "cache", "records", "explain", "score", "report", "analyse", "validate",
                                    "sweep", "compare"]
    missing = [f"{name} {param.opts[0]}" for name, command in group.commands.items() for param in command.params
               if param.param_type_name == "option" and param.name != "help" and not (param.help or "").strip()]
    assert missing == []
    assert all(command.help and command.epilog and "Examples:" in command.epilog
               for command in group.commands.values())
