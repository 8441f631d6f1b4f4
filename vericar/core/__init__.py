"""The recogniser and what it returns: Recognizer, Prediction, the config tree, errors."""
