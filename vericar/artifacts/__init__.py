"""Artifacts on disk and on the Hugging Face Hub: save_pretrained, load, push_to_hub."""
