import os

import torch

# Two cores: one intra-op thread per test process keeps timings stable and avoids oversubscription.
torch.set_num_threads(int(os.environ.get("DETRZOO_TEST_THREADS", "1")))
