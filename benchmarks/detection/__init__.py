"""Detection quality and offline scoring speed of oddwatch's ``auto_od``."""
