"""How raw pixels become network input, as constants without torch: `transforms` applies them, and the
exported MONAI bundle (`bundle`, which the web process builds) writes the same steps into its config."""

CT_WINDOW = (-1000.0, 1000.0)  # HU clipped to this window, then scaled to [-1, 1]
PERCENTILES = (1.0, 99.0)  # any other grayscale modality: per-slice percentiles -> 0 and 1, clipped
RGB_MODALITIES = frozenset({"RGB", "SM", "PATH", "PATHOLOGY", "XC", "GM"})
