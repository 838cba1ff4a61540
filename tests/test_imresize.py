"""data_prep.imresize vs MATLAB-algorithm goldens (tests/assets/make_imresize_golden.py).

Reference matched: MATLAB imresize(..., 'bicubic') with antialiasing as implemented by BasicSR's
basicsr/utils/matlab_functions.py; the goldens come from an independent numpy float64
implementation with dense weight matrices, on a real Kodak crop.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep import imresize as ir
from tests.conftest import kodak_crop

GOLDEN = Path(__file__).parent / "assets" / "imresize_golden.npz"
CASES = {"x2": (24, 30), "x3": (16, 20), "x4": (12, 15), "size_17x23": (17, 23),
         "up_2": (96, 120)}


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(GOLDEN))


def test_golden_input_is_the_kodak_crop(golden):
  crop = kodak_crop(48, 60, "kodim23", top=200, left=300, dtype=np.float64)[0]
  np.testing.assert_array_equal(golden["input"], crop)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_matches_golden(golden, case):
  x = golden["input"]
  y32 = ir.imresize(torch.from_numpy(x.astype(np.float32)).permute(2, 0, 1), size=CASES[case])
  assert y32.dtype == torch.float32
  np.testing.assert_allclose(y32.permute(1, 2, 0).numpy(), golden[case], atol=1e-5, rtol=0)
  np.testing.assert_allclose(ir.imresize(x, size=CASES[case]), golden[case], atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_uint8_matches_golden(golden, case):
  y = ir.imresize(golden["input_u8"], size=CASES[case])
  assert y.dtype == np.uint8
  np.testing.assert_array_equal(y, golden[case + "_u8"])


@pytest.mark.parametrize("s", [2, 3, 4])
def test_scale_argument_and_downscale_uint8(golden, s):
  key = f"x{s}"
  np.testing.assert_allclose(ir.imresize(golden["input"], scale=1 / s), golden[key], atol=1e-12)
  np.testing.assert_array_equal(ir.downscale_uint8(golden["input_u8"], s), golden[key + "_u8"])


def test_batched_nchw_and_gray():
  x = torch.from_numpy(kodak_crop(24, 36, "kodim05")).permute(0, 3, 1, 2)  # [1, 3, 24, 36]
  y = ir.imresize(x, scale=0.25)
  assert y.shape == (1, 3, 6, 9)
  per_channel = torch.stack([ir.imresize(x[0, c], scale=0.25) for c in range(3)])
  torch.testing.assert_close(y[0], per_channel, atol=1e-6, rtol=0)
  # A constant image stays constant (weights sum to one, mirrored borders).
  torch.testing.assert_close(ir.imresize(torch.full((1, 9, 12), 0.3), scale=1 / 3),
                             torch.full((1, 3, 4), 0.3), atol=1e-7, rtol=0)


def test_output_size_rule_and_errors():
  assert ir.output_size((300, 301), 1 / 3) == (100, 101)  # ceil, exact multiples not bumped
  with pytest.raises(ValueError, match="not a multiple of 4"):
    ir.downscale_uint8(np.zeros((10, 12, 3), np.uint8), 4)
  with pytest.raises(ValueError, match="exactly one"):
    ir.imresize(torch.zeros(1, 4, 4))
