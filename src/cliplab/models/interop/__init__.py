"""Reading and writing CLIP checkpoints in other libraries' formats (OpenAI, open_clip, Hugging Face)."""

from cliplab.models.interop.build import build_clip

__all__ = ["build_clip"]
