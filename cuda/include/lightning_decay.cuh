// Attention.Native: the per-head decay λ of the Lightning kernels (lightning.cu, lightning_mma.cu), passed by value.
#pragma once

#define LIGHTNING_MAX_HEADS 64

// λ per head for up to 64 heads, by value (no device copy, no synchronisation); more heads launch in groups.
// Double, as the CPU reference takes it: for λ near 1 (late TransNormer layers, 1 − λ ≈ 1e-5) rounding λ to float before
// taking powers would change 1 − λ by up to ~0.6%, an error that grows with the power.
struct LightningDecay { double lambda[LIGHTNING_MAX_HEADS]; };
