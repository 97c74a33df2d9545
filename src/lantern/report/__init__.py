"""The browsable report of a run directory: `lantern report RUN_DIR` writes `RUN_DIR/report/index.html`, a static
site (jinja2 templates, a little vanilla JavaScript, no server, no CDN) with every latent in a sortable table and
one page per latent."""
from lantern.report.build import build_report

__all__ = ["build_report"]
