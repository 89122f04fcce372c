//! Peer implementations measured in the same run as xkern's CPU matmul: the `gemm` crate
//! (with its AVX-512 `x86-v4` kernels) and `matrixmultiply`. Both read the same f32 host
//! buffers and the same strides as xkern (B transposed by strides when the case says so).

use std::sync::Arc;

/// An f32 batched matmul problem on the host, row-major A `[batch, m, k]`, B `[batch, k,
/// n]` or, when `trans_b`, `[batch, n, k]` read transposed.
pub struct HostMatmul {
    /// A.
    pub a: Arc<Vec<f32>>,
    /// B as stored.
    pub b: Arc<Vec<f32>>,
    /// Matrices.
    pub batch: usize,
    /// Rows of A.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of the output.
    pub n: usize,
    /// B stored `[n, k]`.
    pub trans_b: bool,
}

impl HostMatmul {
    /// Strides of B as `(row, col)` of the logical `[k, n]` matrix.
    fn b_strides(&self) -> (isize, isize) {
        if self.trans_b {
            (1, self.k as isize)
        } else {
            (self.n as isize, 1)
        }
    }

    /// Calls `f(a, b, c)` for each matrix of the batch, `c` being its slice of `out`.
    fn each_matrix(&self, out: &mut [f32], mut f: impl FnMut(&[f32], &[f32], &mut [f32])) {
        let (m, k, n) = (self.m, self.k, self.n);
        for bi in 0..self.batch {
            let c = &mut out[bi * m * n..][..m * n];
            f(
                &self.a[bi * m * k..][..m * k],
                &self.b[bi * k * n..][..k * n],
                c,
            );
        }
    }
}

/// A named peer: a closure that computes the whole product into its own buffer.
pub struct Peer {
    /// Display name.
    pub name: &'static str,
    /// Runs one product.
    pub run: Box<dyn FnMut() -> anyhow::Result<()>>,
}

/// The peers for an f32 matmul on `threads` threads.
pub fn matmul_peers(p: Arc<HostMatmul>, threads: usize) -> Vec<Peer> {
    let g = Arc::clone(&p);
    let mut c_gemm = vec![0.0f32; p.batch * p.m * p.n];
    let mut c_mm = vec![0.0f32; p.batch * p.m * p.n];
    vec![
        Peer {
            name: "gemm",
            run: Box::new(move || {
                let (brs, bcs) = g.b_strides();
                g.each_matrix(&mut c_gemm, |a, b, c| {
                    // SAFETY: the three buffers hold the matrices the strides describe
                    // (a m×k row-major, b k×n with the given strides, c m×n row-major), and
                    // c does not alias a or b.
                    unsafe {
                        gemm::gemm(
                            g.m,
                            g.n,
                            g.k,
                            c.as_mut_ptr(),
                            1,
                            g.n as isize,
                            false,
                            a.as_ptr(),
                            1,
                            g.k as isize,
                            b.as_ptr(),
                            bcs,
                            brs,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::Rayon(threads),
                        );
                    }
                });
                std::hint::black_box(&c_gemm);
                Ok(())
            }),
        },
        Peer {
            name: "matrixmultiply",
            run: Box::new(move || {
                let (brs, bcs) = p.b_strides();
                p.each_matrix(&mut c_mm, |a, b, c| {
                    // SAFETY: as for gemm above: in-bounds strides, no aliasing.
                    unsafe {
                        matrixmultiply::sgemm(
                            p.m,
                            p.k,
                            p.n,
                            1.0,
                            a.as_ptr(),
                            p.k as isize,
                            1,
                            b.as_ptr(),
                            brs,
                            bcs,
                            0.0,
                            c.as_mut_ptr(),
                            p.n as isize,
                            1,
                        );
                    }
                });
                std::hint::black_box(&c_mm);
                Ok(())
            }),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_compute_the_product() {
        // Check the strides we hand the peers: both must agree with a naive product.
        for trans_b in [false, true] {
            let (m, k, n) = (5, 7, 3);
            let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
            let p = Arc::new(HostMatmul {
                a: Arc::new(a.clone()),
                b: Arc::new(b.clone()),
                batch: 1,
                m,
                k,
                n,
                trans_b,
            });
            let mut want = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    want[i * n + j] = (0..k)
                        .map(|p| a[i * k + p] * if trans_b { b[j * k + p] } else { b[p * n + j] })
                        .sum();
                }
            }
            let (brs, bcs) = p.b_strides();
            let mut c = vec![0.0f32; m * n];
            // SAFETY: buffers sized for the strides, no aliasing.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    brs,
                    bcs,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
            assert_eq!(c, want);
            let mut c2 = vec![0.0f32; m * n];
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c2.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    bcs,
                    brs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            assert_eq!(c2, want);
            let mut peers = matmul_peers(p, 1);
            for peer in &mut peers {
                (peer.run)().unwrap();
            }
        }
    }
}
