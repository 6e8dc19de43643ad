//! f32 matrix products on slices, for fused ops that write into part of a buffer,
//! accumulate into one, or read a transposed operand in place. Runs on the `gemm`
//! crate that candle's CPU matmul uses (same kernels: AVX-512 where the CPU has it,
//! AVX2/FMA otherwise, picked at run time).

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

/// A read-only matrix: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns, read in place.
    pub fn rows_t(data: &'a [f32], cols: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }

    /// Does an (r × c) matrix fit in `data`?
    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || last(r, self.rs, c, self.cs).is_some_and(|i| i < self.data.len())
    }
}

/// The offset of element (r−1, c−1), (r−1)·rs + (c−1)·cs, or None if it overflows.
fn last(r: usize, rs: usize, c: usize, cs: usize) -> Option<usize> {
    (r - 1)
        .checked_mul(rs)?
        .checked_add((c - 1).checked_mul(cs)?)
}

/// Parallel (rayon, candle's thread count) or on the calling thread (inside a
/// task that is itself one of many parallel ones).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Par {
    Threads,
    Serial,
}

/// dst (m × n, row stride `dst_rs`) = `acc`·dst + a (m × k) · b (k × n).
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    a: Mat,
    b: Mat,
    par: Par,
) -> Result<()> {
    let dst_fits = m == 0 || n == 0 || last(m, dst_rs, n, 1).is_some_and(|i| i < dst.len());
    if !dst_fits || !a.fits(m, k) || !b.fits(k, n) || dst_rs < n {
        candle_core::bail!(
            "matmul ({m}×{k})·({k}×{n}): operand buffers of {}, {} and {} values do not fit",
            a.data.len(),
            b.data.len(),
            dst.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // SAFETY: the checks above keep every index the kernel reads or writes inside
    // the slices (largest offsets (m−1)·rs + (k−1)·cs etc.); `dst` is borrowed
    // mutably, so it aliases neither operand.
    unsafe { gemm_raw((m, n, k), dst.as_mut_ptr(), dst_rs, acc, a, b, par) };
    Ok(())
}

/// [a₁·b₁ | a₂·b₂ | …]: the products (m × kᵢ)·(kᵢ × nᵢ) side by side in a new
/// row-major (m × Σnᵢ) buffer. Each value is written once by the kernel, so the
/// buffer is never zero-filled first (for the decoder's large activations that
/// fill was a measurable share of a training step).
pub fn products(m: usize, parts: &[(usize, usize, Mat, Mat)], par: Par) -> Result<Vec<f32>> {
    let Some(cols) = parts.iter().try_fold(0usize, |c, p| c.checked_add(p.0)) else {
        candle_core::bail!("product: column count overflows");
    };
    for &(n, k, a, b) in parts {
        if !a.fits(m, k) || !b.fits(k, n) {
            candle_core::bail!(
                "product ({m}×{k})·({k}×{n}): operand buffers of {} and {} values do not fit",
                a.data.len(),
                b.data.len()
            );
        }
    }
    let Some(len) = m.checked_mul(cols) else {
        candle_core::bail!("product of {m} rows × {cols} columns overflows");
    };
    // The crate's matrix-vector paths (one row, one column or a depth ≤ 2) form
    // a slice over the destination, so those get an initialised (zeroed) one; the
    // large products the decoder makes are written without it.
    let tiny = m == 1 || parts.iter().any(|&(n, k, ..)| n == 1 || k <= 2);
    let mut out: Vec<f32> = Vec::with_capacity(len);
    if tiny {
        out.resize(len, 0.0);
    }
    let base = out.as_mut_ptr();
    let mut col = 0;
    for &(n, k, a, b) in parts {
        if m > 0 && n > 0 {
            // SAFETY: the operands fit (checked above); the destination block is
            // rows 0..m, columns col..col+n of the (m × cols) allocation, and the
            // blocks of the parts are disjoint.
            unsafe { gemm_raw((m, n, k), base.add(col), cols, false, a, b, par) };
        }
        col += n;
    }
    // SAFETY: the blocks cover all m × cols values, and the kernel writes every
    // value of its block when it does not read the destination (k = 0 included:
    // it then writes zeros).
    unsafe { out.set_len(len) };
    Ok(out)
}

/// The kernel call behind [`matmul`] and [`products`].
///
/// # Safety
/// Every index the kernel touches must be in bounds: a and b must fit their
/// shapes, dst must hold (m−1)·dst_rs + n values, and dst must alias neither
/// operand. With `acc` false dst may be uninitialised.
unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    acc: bool,
    a: Mat,
    b: Mat,
    par: Par,
) {
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if par == Par::Threads && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract (above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            acc,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The f32 values of a contiguous CPU storage, as a custom op receives its
/// inputs; `what` names the op or input in the error.
pub fn storage_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: f32 input expected");
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: contiguous input expected");
    };
    Ok(&v[a..b])
}

/// The largest |value| of a tensor (any float dtype), for tests.
#[cfg(test)]
pub(crate) fn max_abs(t: &Tensor) -> f32 {
    t.to_dtype(candle_core::DType::F32)
        .and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("max_abs of a float tensor")
}

/// Runs `f` on the f32 values of a CPU tensor, in row-major order (a strided
/// tensor is copied first).
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    with_f32s(&[t], |s| f(s[0]))
}

/// [`with_f32`] for several tensors at once, read in place (no copies of
/// contiguous tensors).
pub fn with_f32s<R>(ts: &[&Tensor], f: impl FnOnce(&[&[f32]]) -> R) -> Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (t, (s, l)) in ts.iter().zip(&guards) {
        let Storage::Cpu(CpuStorage::F32(v)) = &**s else {
            candle_core::bail!("an f32 CPU tensor was expected, got {:?}", t.dtype());
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("a contiguous tensor was expected");
        };
        slices.push(&v[a..b]);
    }
    Ok(f(&slices))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_operands_partial_destination_and_accumulation() {
        let (m, n, k) = (7, 5, 9);
        let av: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bv: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        // a read as the transpose of a (k × m) row-major buffer.
        let a_t: Vec<f32> = (0..k * m).map(|i| av[(i % m) * k + i / m]).collect();
        let (a, b) = (Mat::rows(&av, k), Mat::rows(&bv, n));
        let want = naive(m, n, k, a, b);
        for par in [Par::Threads, Par::Serial] {
            // Columns 2..2+n of an (m × 8) buffer; column 0, 1 and 7 untouched.
            let mut dst = vec![5f32; m * 8];
            matmul(
                (m, n, k),
                &mut dst[2..],
                8,
                false,
                Mat::rows_t(&a_t, m),
                b,
                par,
            )
            .unwrap();
            matmul((m, n, k), &mut dst[2..], 8, true, a, b, par).unwrap();
            for i in 0..m {
                assert_eq!(&dst[i * 8..i * 8 + 2], &[5.0, 5.0]);
                assert_eq!(dst[i * 8 + 7], 5.0);
                for j in 0..n {
                    let d = dst[i * 8 + 2 + j] - 2.0 * want[i * n + j];
                    assert!(d.abs() < 1e-5, "({i}, {j}): {d}");
                }
            }
        }
        let mut small = vec![0f32; m * n - 1];
        assert!(matmul((m, n, k), &mut small, n, false, a, b, Par::Serial).is_err());
    }

    #[test]
    fn products_side_by_side_fill_every_value() {
        let m = 6;
        let av: Vec<f32> = (0..m * 9).map(|i| (i as f32 * 0.37).sin()).collect();
        let bv: Vec<f32> = (0..9 * 5).map(|i| (i as f32 * 0.11).cos()).collect();
        let cv: Vec<f32> = (0..m * 4).map(|i| (i as f32 * 0.23).cos()).collect();
        let dv: Vec<f32> = (0..4 * 3).map(|i| (i as f32 * 0.7).sin()).collect();
        let (a, b) = (Mat::rows(&av, 9), Mat::rows(&bv, 5));
        let (c, d) = (Mat::rows(&cv, 4), Mat::rows(&dv, 3));
        // A part with k = 0 must come out as zeros, not as whatever was in memory
        // (that one takes the zero-filled path; without it, the unfilled one).
        let with_empty = [(5, 9, a, b), (2, 0, a, b), (3, 4, c, d)];
        let without = [(5, 9, a, b), (3, 4, c, d)];
        let (ab, cd) = (naive(m, 5, 9, a, b), naive(m, 3, 4, c, d));
        for (parts, empty) in [(&with_empty[..], 2), (&without[..], 0)] {
            let cols = 8 + empty;
            for par in [Par::Threads, Par::Serial] {
                // Freed garbage of the same size, which the allocator is likely to reuse.
                drop(std::hint::black_box(vec![7f32; m * cols]));
                let y = products(m, parts, par).unwrap();
                assert_eq!(y.len(), m * cols);
                for i in 0..m {
                    let row = &y[i * cols..(i + 1) * cols];
                    for j in 0..5 {
                        assert!((row[j] - ab[i * 5 + j]).abs() < 1e-5);
                    }
                    assert!(row[5..5 + empty].iter().all(|&v| v == 0.0));
                    for j in 0..3 {
                        assert!((row[5 + empty + j] - cd[i * 3 + j]).abs() < 1e-5);
                    }
                }
            }
        }
        assert!(products(m, &[(5, 10, a, b)], Par::Serial).is_err());
        assert!(products(0, &with_empty, Par::Serial).unwrap().is_empty());
        assert!(products(usize::MAX, &[(2, 0, a, b)], Par::Serial).is_err());
    }
}
