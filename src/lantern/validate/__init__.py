"""Validation on planted latents: do the scorers give true explanations high scores, wrong ones low scores
and unrelated ones chance? (`lantern validate`, issue 5.)"""
from lantern.validate.flow import DEFAULT_TOKENS, run_validation, validation_config
from lantern.validate.report import Report, print_report

__all__ = ["DEFAULT_TOKENS", "Report", "print_report", "run_validation", "validation_config"]
