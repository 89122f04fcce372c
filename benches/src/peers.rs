//! Peer implementations measured in the same run as xkern's CPU matmul: the `gemm` crate
//! (with its AVX-512 `x86-v4` kernels), `matrixmultiply` and, with the `openblas` feature,
//! the system's OpenBLAS (the reference BLAS of the CPU issues' targets). All read the same
//! f32 host buffers and the same strides as xkern (B transposed by strides when the case
//! says so).

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
    #[cfg(feature = "openblas")]
    let blas = Arc::clone(&p);
    #[allow(unused_mut)] // pushed to with the `openblas` feature
    let mut peers = vec![
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
    ];
    #[cfg(feature = "openblas")]
    {
        openblas::set_threads(threads);
        let mut c_blas = vec![0.0f32; blas.batch * blas.m * blas.n];
        peers.push(Peer {
            name: "openblas",
            run: Box::new(move || {
                openblas::product(&blas, &mut c_blas)?;
                std::hint::black_box(&c_blas);
                Ok(())
            }),
        });
    }
    peers
}

/// OpenBLAS through its C interface, linked from the system (`libopenblas-dev` on
/// Debian/Ubuntu; its run-time CPU dispatch picks the kernels, see [`openblas::core_name`]).
#[cfg(feature = "openblas")]
pub mod openblas {
    use super::HostMatmul;
    use anyhow::Context;
    use std::ffi::{CStr, c_char, c_int};

    // CBLAS enumerations (cblas.h).
    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    #[link(name = "openblas")]
    unsafe extern "C" {
        fn cblas_sgemm(
            order: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        fn cblas_sgemv(
            order: c_int,
            trans: c_int,
            m: c_int,
            n: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            x: *const f32,
            incx: c_int,
            beta: f32,
            y: *mut f32,
            incy: c_int,
        );
        fn openblas_set_num_threads(n: c_int);
        fn openblas_get_corename() -> *const c_char;
    }

    /// The kernel family OpenBLAS chose for this CPU (e.g. `Cooperlake`, `Zen`).
    pub fn core_name() -> String {
        // SAFETY: returns a pointer to a static NUL-terminated string (or null).
        let p = unsafe { openblas_get_corename() };
        if p.is_null() {
            return "unknown".into();
        }
        // SAFETY: non-null, NUL-terminated, static (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    /// Runs OpenBLAS on `threads` threads from now on.
    pub fn set_threads(threads: usize) {
        let n = c_int::try_from(threads.max(1)).unwrap_or(c_int::MAX);
        // SAFETY: a plain setter of the library's thread count.
        unsafe { openblas_set_num_threads(n) };
    }

    /// `out = A·B` for every matrix of `p` (`out` holds `batch·m·n` floats): `sgemv` for
    /// a row vector times a matrix or a matrix times a column vector (what NumPy calls
    /// for those shapes), `sgemm` otherwise.
    pub fn product(p: &HostMatmul, out: &mut [f32]) -> anyhow::Result<()> {
        let int = |x: usize| c_int::try_from(x).context("dimension beyond the BLAS int range");
        let (m, k, n) = (int(p.m)?, int(p.k)?, int(p.n)?);
        anyhow::ensure!(out.len() == p.batch * p.m * p.n, "output size");
        // B as stored: `[k, n]`, or `[n, k]` read transposed.
        let (tb, ldb) = if p.trans_b { (TRANS, k) } else { (NO_TRANS, n) };
        p.each_matrix(out, |a, b, c| {
            // SAFETY: a is m×k row-major, b holds k·n floats in the layout `tb`/`ldb`
            // describe, c is m×n row-major and aliases neither; all extents fit c_int.
            unsafe {
                if p.m == 1 {
                    // cᵀ = Bᵀ·aᵀ: B as stored (`ldb` columns), transposed unless it is
                    // stored `[n, k]`.
                    let (t, rows) = if p.trans_b { (NO_TRANS, n) } else { (TRANS, k) };
                    cblas_sgemv(
                        ROW_MAJOR,
                        t,
                        rows,
                        ldb,
                        1.0,
                        b.as_ptr(),
                        ldb,
                        a.as_ptr(),
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        1,
                    );
                } else if p.n == 1 {
                    // c = A·b, b's k elements contiguous in both layouts.
                    cblas_sgemv(
                        ROW_MAJOR,
                        NO_TRANS,
                        m,
                        k,
                        1.0,
                        a.as_ptr(),
                        k,
                        b.as_ptr(),
                        1,
                        0.0,
                        c.as_mut_ptr(),
                        1,
                    );
                } else {
                    cblas_sgemm(
                        ROW_MAJOR,
                        NO_TRANS,
                        tb,
                        m,
                        n,
                        k,
                        1.0,
                        a.as_ptr(),
                        k,
                        b.as_ptr(),
                        ldb,
                        0.0,
                        c.as_mut_ptr(),
                        n,
                    );
                }
            }
        });
        Ok(())
    }
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

    #[cfg(feature = "openblas")]
    #[test]
    fn openblas_computes_the_product() {
        // Every branch (sgemm, vector·matrix and matrix·vector sgemv), both layouts of B,
        // two matrices per batch; small integers and halves, so every sum is exact.
        for (m, k, n) in [(5, 7, 3), (1, 9, 6), (4, 8, 1), (1, 5, 1)] {
            for trans_b in [false, true] {
                let batch = 2;
                let a: Vec<f32> = (0..batch * m * k)
                    .map(|i| (i % 11) as f32 * 0.5 - 2.5)
                    .collect();
                let b: Vec<f32> = (0..batch * k * n).map(|i| (i % 5) as f32 - 2.0).collect();
                let mut want = vec![0.0f32; batch * m * n];
                for bi in 0..batch {
                    let (a, b) = (&a[bi * m * k..], &b[bi * k * n..]);
                    for i in 0..m {
                        for j in 0..n {
                            want[(bi * m + i) * n + j] = (0..k)
                                .map(|p| {
                                    let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                                    a[i * k + p] * bv
                                })
                                .sum();
                        }
                    }
                }
                let p = HostMatmul {
                    a: Arc::new(a),
                    b: Arc::new(b),
                    batch,
                    m,
                    k,
                    n,
                    trans_b,
                };
                let mut got = vec![f32::NAN; batch * m * n];
                openblas::set_threads(2);
                openblas::product(&p, &mut got).unwrap();
                assert_eq!(got, want, "{m}x{k}x{n} trans_b {trans_b}");
            }
        }
        assert!(!openblas::core_name().is_empty());
    }
}
