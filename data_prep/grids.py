"""The papers' codec grids, for `python -m data_prep.prepare --grid NAME`."""

GRIDS = {
    # UCIP section 4.1: JPEG, HM, VTM, C_PSNR, C_SSIM, HiFiC; 23 degradations.
    "ucip": {"jpeg": (10, 20, 30, 40), "hevc": (32, 37, 42, 47), "vvc": (32, 37, 42, 47),
             "cheng2020-anchor-mse": (1, 2, 3, 4), "cheng2020-anchor-ms-ssim": (1, 2, 3, 4),
             "external:hific": (1, 2, 3)},
    "promptcir": {"jpeg": (10, 20, 30, 40, 50, 60, 70)},
    "cisr": {"jpeg": (10, 20, 30, 40, 50), "webp": (5, 10, 20, 30, 40)},
    "promptsr": {"none": (0,)},
}
