"""Photos in: safe image opening, vehicle detection, per-vehicle crops of a whole scene."""
