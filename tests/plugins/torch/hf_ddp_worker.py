"""One rank of `torchrun --nproc_per_node 2 hf_ddp_worker.py OUT HF_DIR` (HF Trainer, gloo on CPU)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import transformers as T  # noqa: E402

import tensortap as tt  # noqa: E402
from tensortap_torch.integrations import TransformersCallback  # noqa: E402

from hf_trainer_setup import Texts, classifier, tokenizer, training_args  # noqa: E402


def main() -> None:
    out, hf_dir = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    tok = tokenizer()
    hook = tt.Hook(out, include_collections=["gradients", "losses", "attention"],
                   save_config=tt.SaveConfig(save_interval=1))
    args = training_args(hf_dir, max_steps=3, ddp_backend="gloo", ddp_find_unused_parameters=False, learning_rate=0.1)
    trainer = T.Trainer(model=classifier(), args=args, train_dataset=Texts(tok, 32, 1), processing_class=tok,
                        callbacks=[TransformersCallback(hook)])
    trainer.train()
    hook.close()


if __name__ == "__main__":
    main()
