"""The judged: rectified-flow text-to-video generators (model families, loading, LoRA, sampling), the latent
cache, the noisy-latent reward model of Flow-NRG and reward guidance, and the parts alignment training needs."""
