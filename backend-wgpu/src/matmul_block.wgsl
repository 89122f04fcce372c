// matmul_block.wgsl: what the block kernels (matmul_tiled.wgsl, matmul_wide.wgsl,
// matmul_coop.wgsl) share: which block of C a workgroup computes, and the epilogue of
// one output (bounds check, bias, activation, store). Needs BM, BN, P, offs, out and the
// epilogue's load_bias / activate.

// The block of workgroup g: its batch entry, first row and column of C, and the batch
// entry's offsets of A and B (from the host's table).
struct BlockAt { batch: u32, m0: u32, n0: u32, a0: u32, b0: u32 }

fn block_at(g: u32) -> BlockAt {
    let tile_n = g % P.tiles_n;
    let rest = g / P.tiles_n;
    let batch = rest / P.tiles_m;
    return BlockAt(batch, (rest % P.tiles_m) * BM, tile_n * BN, offs[2u * batch], offs[2u * batch + 1u]);
}

fn store(batch: u32, row: u32, col: u32, acc: f32) {
    if (row < P.m && col < P.n) {
        var v = acc;
        if (HAS_BIAS == 1u) { v = v + load_bias(P.bias_off + col * P.bias_stride); }
        out[(batch * P.m + row) * P.n + col] = activate(v);
    }
}
