"""What a vehicle looks like beyond its name: colour and viewpoint (a per-vehicle stage of the Recognizer)."""
