"""The peers of benchmarks/denoise_selfsupervised.py, run by another Python that has them (CAREamics,
bm3d, scikit-image), so that none of them is ever installed into ae's own environment.

    PEER_PYTHON _selfsupervised_peers.py camera OUT.png
    PEER_PYTHON _selfsupervised_peers.py bm3d NOISY.png SIGMA OUT.npy
    PEER_PYTHON _selfsupervised_peers.py careamics NOISY.npy SECONDS OUT.npy   (uint8 (N, H, W) in and out)
"""

from __future__ import annotations

import sys
import time

import numpy as np


def camera(out: str) -> None:
    import skimage.data
    from PIL import Image

    Image.fromarray(skimage.data.camera()).save(out)


def bm3d(noisy: str, sigma: str, out: str) -> None:
    import bm3d as bm3d_lib
    from PIL import Image

    x = np.asarray(Image.open(noisy), np.float32) / 255
    np.save(out, np.clip(bm3d_lib.bm3d(x, sigma_psd=float(sigma)), 0, 1).astype(np.float32))


def careamics(noisy: str, seconds: str, out: str) -> None:
    """CAREamics' Noise2Void (its defaults: N2V, not N2V2), 16 px patches, stopped after SECONDS of training."""
    import tempfile

    from careamics import CAREamist
    from careamics.config import create_advanced_n2v_config
    from lightning.pytorch.callbacks import Callback

    budget, started = float(seconds), time.perf_counter()

    class WallTime(Callback):
        def on_train_batch_end(self, trainer, *args):
            if time.perf_counter() - started > budget:
                trainer.should_stop = True

    images = np.load(noisy).astype(np.float32)
    config = create_advanced_n2v_config(  # 0.4 %: the least that 16 px patches allow (0.2 % is the default)
        experiment_name="n2v", data_type="array", axes="SYX", patch_size=[16, 16], batch_size=64, num_epochs=1000,
        masked_pixel_percentage=0.4,
    )
    model = CAREamist(config, work_dir=tempfile.mkdtemp(), callbacks=[WallTime()], enable_progress_bar=False)
    model.train(train_data=images)
    trained = time.perf_counter() - started
    pred, _ = model.predict(images, data_type="array", axes="SYX")
    pred = np.concatenate([np.asarray(p, np.float32).reshape(-1, *images.shape[1:]) for p in pred])
    np.save(out, np.clip(pred / 255, 0, 1))
    print(f"{trained:.1f}")


if __name__ == "__main__":
    {"camera": camera, "bm3d": bm3d, "careamics": careamics}[sys.argv[1]](*sys.argv[2:])
