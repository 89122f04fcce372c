// matmul_coop_emulated.wgsl (tests only): the cooperative-matrix operations of
// matmul_coop.wgsl in plain WGSL, so that the kernel's staging, fragment addressing and
// write-back run on adapters without cooperative matrices (lavapipe). An A or B fragment
// is only its address (the staged tile is read at the multiply, before the next
// barrier); an accumulator is spread over the subgroup as the write-back reads it: lane
// l holds the elements l, l + SG, ... of the row-major 16 × 16 fragment. Addresses
// follow SPIR-V's layouts: row-major (`coopLoadT`) element (r, c) at base + r·stride + c,
// column-major (`coopLoad`) at base + c·stride + r.
const EMU_N: u32 = 256u / SG;

struct EmuFrag { base: u32, stride: u32, row_major: bool }

fn emu_load(base: u32, stride: u32, row_major: bool) -> EmuFrag {
    return EmuFrag(base, stride, row_major);
}

fn emu_at(f: EmuFrag, r: u32, c: u32) -> u32 {
    return select(f.base + c * f.stride + r, f.base + r * f.stride + c, f.row_major);
}

fn emu_mma(lane: u32, a: EmuFrag, b: EmuFrag, c: array<f32, EMU_N>) -> array<f32, EMU_N> {
    var d = c;
    for (var i = 0u; i < EMU_N; i = i + 1u) {
        let e = lane + i * SG;
        let r = e / 16u;
        let col = e % 16u;
        var s = d[i];
        for (var k = 0u; k < 16u; k = k + 1u) {
            s = fma(f32(ta[emu_at(a, r, k)]), f32(tb[emu_at(b, k, col)]), s);
        }
        d[i] = s;
    }
    return d;
}

fn emu_store(lane: u32, c: array<f32, EMU_N>, base: u32) {
    for (var i = 0u; i < EMU_N; i = i + 1u) {
        tc[base + lane + i * SG] = c[i];
    }
}
