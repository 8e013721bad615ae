//! Large buffers that a decode step streams, asked of Linux in huge pages.
//!
//! Where the engine builds weights in memory (the 8-bit head, a float checkpoint's converted
//! matrices), their pages are anonymous, and with transparent huge pages in `madvise` mode (a
//! common default) Linux backs them with 4 KiB pages unless asked. A decode step reads every
//! one of those pages once, so each costs a TLB miss and a page walk. Measured on Zen 4 from
//! memory, against 4 KiB anonymous pages: the 2-bit decode kernel read 1.14–1.19x faster from
//! huge pages, the f16 head 1.15x, a plain streaming read 1.33x. The packed weights, mapped
//! from their file, get the same through the page cache (see `tern_pack::fsutil`).

/// A vector of `len` zeroed elements whose whole 2 MiB pages (those that the allocation
/// covers) Linux is asked to back with huge pages before they are first touched. Advice only:
/// where it is refused (another OS, huge pages off), this is `vec![T::zeroed(); len]`.
pub(crate) fn zeroed<T: bytemuck::Pod>(len: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    let spare = v.spare_capacity_mut();
    advise(spare.as_mut_ptr().cast(), std::mem::size_of_val(spare));
    v.resize(len, T::zeroed());
    v
}

/// `bytes` (little-endian elements) copied into a [`zeroed`] vector, a partial last element
/// padded with zeros (as `bytemuck::pod_collect_to_vec`).
pub(crate) fn copied<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    let mut v = zeroed::<T>(bytes.len().div_ceil(std::mem::size_of::<T>()));
    bytemuck::cast_slice_mut::<T, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

/// Asks for huge pages over the 2 MiB pages inside `[p, p + bytes)`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn advise(p: *mut u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let start = (p as usize).next_multiple_of(HUGE);
    let end = (p as usize).saturating_add(bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside one live allocation of this process; the advice
        // changes how its pages are backed, never their contents, and touches no memory.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn advise(_p: *mut u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_or_copied_whatever_their_pages() {
        for len in [0, 1, 1000, (5 << 20) + 3] {
            let v = zeroed::<f32>(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
        let src: Vec<u8> = (0..(3 << 20) + 8).map(|i| (i * 31 % 256) as u8).collect();
        let v = copied::<u16>(&src);
        assert_eq!(v.len(), src.len() / 2);
        assert_eq!(v[1], u16::from_le_bytes([src[2], src[3]]));
        assert_eq!(bytemuck::cast_slice::<u16, u8>(&v), &src[..]);
        assert_eq!(copied::<u16>(&[1, 2, 3]), [0x0201, 3]);
    }
}
