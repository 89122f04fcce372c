//! Tensor plumbing: upload/download of every dtype, casts, strided copies, views, randn.

// Test code: indexes host copies whose lengths the case has checked.
#![allow(clippy::indexing_slicing)]

use super::{Cases, Fail, check, input, permute_host, seed_of, unsupported};
use crate::reference::HostTensor;
use crate::{Backend, DType, HostData, Tensor};
use half::bf16;

pub(crate) fn cases<B: Backend>(c: &mut Cases<B>) {
    c.add("tensor/u32/round-trip", |cx| {
        let data: Vec<u32> = vec![0, 1, u32::MAX, 7, 1 << 31, 42];
        let t = Tensor::from_slice(&cx.dev, &[2, 3], &data)?;
        let back = t.to_vec::<u32>()?;
        if back != data {
            return Err(Fail(format!("u32 round trip gave {back:?}")));
        }
        // U32 converts to floats exactly where representable, rounding to nearest even.
        let f = t.to_dtype(DType::F32)?.to_vec::<f32>()?;
        let want: Vec<f32> = data.iter().map(|&x| x as f32).collect();
        if f != want {
            return Err(Fail(format!("u32 -> f32 gave {f:?}, expected {want:?}")));
        }
        Ok(())
    });
    c.add("tensor/u32/contiguous-transpose", |cx| {
        // Indices above 2^24 are not f32 values: a copy must move bits, not numbers.
        let data: Vec<u32> = vec![1_495_832_340, 16_777_217, u32::MAX, 3, 1 << 31, 42];
        let t = Tensor::from_slice(&cx.dev, &[2, 3], &data)?;
        let got = t.t()?.contiguous()?.to_vec::<u32>()?;
        let want = vec![data[0], data[3], data[1], data[4], data[2], data[5]];
        if got != want {
            return Err(Fail(format!(
                "u32 transpose gave {got:?}, expected {want:?}"
            )));
        }
        Ok(())
    });
    for dtype in DType::FLOATS {
        c.add(format!("tensor/{dtype}/round-trip-bits"), move |cx| {
            if let Some(o) = unsupported(cx, dtype) {
                return o;
            }
            // Every bit pattern class: normals, denormals, ±0, ±∞, NaN survive a round trip
            // bit for bit.
            let values = [
                0.0f32,
                -0.0,
                1.0,
                -1.5,
                65504.0,
                1e-7,
                3.0e38,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e-40,
            ];
            let host =
                HostData::from_f32(dtype, &values).ok_or_else(|| Fail("float dtype".into()))?;
            let t = Tensor::from_host(&cx.dev, &[values.len()], host.as_slice())?;
            let back = t.to_host()?;
            if back != host {
                return Err(Fail(format!(
                    "round trip changed the data: {back:?} vs {host:?}"
                )));
            }
            let nan =
                HostData::from_f32(dtype, &[f32::NAN]).ok_or_else(|| Fail("float dtype".into()))?;
            let n = Tensor::from_host(&cx.dev, &[1], nan.as_slice())?.to_f64_vec()?;
            if !n[0].is_nan() {
                return Err(Fail(format!("NaN came back as {}", n[0])));
            }
            Ok(())
        });
        for to in DType::FLOATS {
            if to == dtype {
                continue;
            }
            let name = format!("tensor/cast/{dtype}-to-{to}");
            let seed = seed_of(&name);
            c.add(name, move |cx| {
                for d in [dtype, to] {
                    if let Some(o) = unsupported(cx, d) {
                        return o;
                    }
                }
                // Wide-range values (including ones that overflow f16) and specials; the
                // cast must equal the host's round-to-nearest-even conversion exactly.
                let mut values: Vec<f32> = crate::random::normal_f32(seed, 1000)
                    .iter()
                    .map(|x| x * 3e4)
                    .collect();
                values.extend([
                    f32::NAN,
                    f32::INFINITY,
                    -0.0,
                    1e-30,
                    70000.0,
                    -1e-6,
                    1.0 + 1.0 / 256.0,
                ]);
                let src =
                    HostData::from_f32(dtype, &values).ok_or_else(|| Fail("float dtype".into()))?;
                let t = Tensor::from_host(&cx.dev, &[values.len()], src.as_slice())?;
                let got = t.to_dtype(to)?.to_f64_vec()?;
                let want: Vec<f64> = src
                    .to_f64()
                    .iter()
                    .map(|&x| f64::from(to.round_f32(x as f32)))
                    .collect();
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    if g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()) {
                        return Err(Fail(format!(
                            "element {i} ({}): got {g}, expected {w}",
                            values[i]
                        )));
                    }
                }
                Ok(())
            });
        }
        // Strided copies: transposes and permutations made contiguous.
        for (stored, perm) in [
            (vec![33, 129], vec![1, 0]),
            (vec![7, 33, 127], vec![2, 0, 1]),
            (vec![2, 3, 4, 5], vec![0, 2, 1, 3]),
            (vec![1000, 1], vec![1, 0]),
        ] {
            let name = format!("tensor/{dtype}/contiguous/shape={stored:?}/permute{perm:?}");
            let seed = seed_of(&name);
            c.add(name, move |cx| {
                if let Some(o) = unsupported(cx, dtype) {
                    return o;
                }
                let (x, hx) = input(cx, &stored, Some(&perm), dtype, seed)?;
                let y = x.contiguous()?;
                if !y.is_contiguous() {
                    return Err(Fail("contiguous() returned a strided tensor".into()));
                }
                check(&y, &hx, dtype)?;
                // reshape of a strided view copies, and keeps row-major order.
                let flat = x.reshape(&[x.numel()])?;
                check(
                    &flat,
                    &HostTensor::new(&[hx.data.len()], hx.data.clone()),
                    dtype,
                )
            });
        }
        c.add(format!("tensor/{dtype}/randn-deterministic"), move |cx| {
            if let Some(o) = unsupported(cx, dtype) {
                return o;
            }
            let a = Tensor::randn(&cx.dev, &[33, 7], dtype, 1234)?.to_f64_vec()?;
            let b = Tensor::randn(&cx.dev, &[33, 7], dtype, 1234)?.to_f64_vec()?;
            let host: Vec<f64> = crate::random::normal_f32(1234, 33 * 7)
                .iter()
                .map(|&x| f64::from(dtype.round_f32(x)))
                .collect();
            if a != b || a != host {
                return Err(Fail(
                    "randn is not the documented deterministic stream".into(),
                ));
            }
            Ok(())
        });
        c.add(format!("tensor/{dtype}/zeros"), move |cx| {
            if let Some(o) = unsupported(cx, dtype) {
                return o;
            }
            let z = Tensor::zeros(&cx.dev, &[3, 0, 2], dtype)?;
            let z2 = Tensor::zeros(&cx.dev, &[129, 7], dtype)?;
            if !z.to_f64_vec()?.is_empty() || z2.to_f64_vec()?.iter().any(|&x| x.to_bits() != 0) {
                return Err(Fail("zeros are not all +0.0".into()));
            }
            Ok(())
        });
    }
    c.add("tensor/f32/views-share-storage", |cx| {
        let (x, hx) = input(cx, &[4, 6], None, DType::F32, 5)?;
        // t().t() is the original; reshape of a contiguous tensor is a view.
        check(&x.t()?.t()?, &hx, DType::F32)?;
        let r = x.reshape(&[2, 12])?;
        if !std::ptr::eq(r.storage(), x.storage()) {
            return Err(Fail("reshape of a contiguous tensor copied".into()));
        }
        check(&x.t()?, &permute_host(&hx, &[1, 0]), DType::F32)?;
        // A rank-0 tensor holds one element (bf16: every device holds it, f16 may not).
        let s = Tensor::from_slice(&cx.dev, &[], &[bf16::from_f32(2.5)])?;
        if s.to_vec::<bf16>()? != [bf16::from_f32(2.5)] || !s.shape().is_empty() {
            return Err(Fail("rank-0 tensor".into()));
        }
        let b = Tensor::from_slice(&cx.dev, &[1], &[bf16::from_f32(-3.0)])?;
        if b.to_vec::<bf16>()? != [bf16::from_f32(-3.0)] {
            return Err(Fail("bf16 upload".into()));
        }
        Ok(())
    });
}
