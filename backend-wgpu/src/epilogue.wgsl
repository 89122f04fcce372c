// epilogue.wgsl: the activations of the fused matmul epilogue, shared by the matmul
// kernels (matmul.rs substitutes it for their EPILOGUE placeholder); `ACT` is the
// kernel's activation constant.

// erfc with fractional error below 1.2e-7 for every x (Numerical Recipes in C, 2nd ed.,
// §6.2, `erfcc`: a Chebyshev fit of erfc·exp(z²)). Used as Φ(x) = erfc(−x/√2)/2, which
// keeps full relative accuracy in the negative tail where 1 + erf(x) would cancel.
fn erfc_f32(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
        t * (-0.82215223 + t * 0.17087277))))))));
    // −z² = −zh² + (zh − z)(zh + z) with zh = z cut to 12 mantissa bits, so zh² is exact
    // and the large part of the exponent carries no rounding error (as musl's erfcf).
    let zh = bitcast<f32>(bitcast<u32>(z) & 0xfffff000u);
    let r = t * exp(-zh * zh) * exp((zh - z) * (zh + z) + p);
    return select(2.0 - r, r, x >= 0.0);
}

fn activate(x: f32) -> f32 {
    if (ACT == 1u) { return select(x, 0.0, x < 0.0); }
    if (ACT == 2u) { return x * 0.5 * erfc_f32(-x * 0.70710678118654752); }
    if (ACT == 3u) { return x / (1.0 + exp(-x)); }
    return x;
}
