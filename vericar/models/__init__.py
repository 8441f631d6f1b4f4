"""Networks and their inputs: backbones, offline weights, the embedding model, transforms, losses, zero-shot prototypes, Grad-CAM++."""
