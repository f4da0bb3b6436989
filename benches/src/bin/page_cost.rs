//! What a page of memory the process has not touched before costs on this machine, and so
//! what a log that grows costs per record.
//!
//! A durable cache's log writes its records through a shared mapping of a preallocated file.
//! Each page the log reaches for the first time faults, and the kernel gives it a fresh
//! page-cache page filled with zeros. That cost is paid per page, so a record pays its share:
//! a 4 KiB page holds about 41 records of 64 B values and 4 of 1 KiB. This binary times it
//! apart from the log, one write per 4 KiB page, in the fastest of three rounds:
//!
//! - `anonymous, first touch`: a fresh private anonymous mapping of 1 GiB;
//! - `anonymous, resident`: the same pages written again (no fault: the floor);
//! - `anonymous, after MADV_DONTNEED`: the pages handed back to the kernel and touched again;
//! - `file, first touch`: a sparse 256 MiB file in `std::env::temp_dir()` (on the disk, like
//!   the benches' logs), mapped shared, written through the mapping;
//! - `file, fallocated, first touch`: the same, with the file's blocks allocated first by
//!   `fallocate` (as the log reserves its space, 1 MiB at a time): the log's own case;
//! - `file, resident`: the pages of the sparse file written again.
//!
//! Before each first touch the binary sleeps 3 s, so that memory freed by the measurement
//! before has time to leave the guest, if the machine hands free memory back to its host (this
//! VM boots with `page_reporting.page_reporting_order=11`, see `/proc/cmdline`). One more row
//! writes the sparse file right after 1 GiB of anonymous memory was touched and freed, with no
//! pause: pages the guest still holds.
//!
//! Run: `cargo run --release -p larder-benches --bin page_cost`.

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::OpenOptions;
    use std::time::{Duration, Instant};

    const PAGE: usize = 4096;
    const ANON_BYTES: usize = 1 << 30;
    const FILE_BYTES: usize = 256 << 20;

    /// A mapping made here and unmapped on drop.
    struct Mapping {
        at: *mut u8,
        len: usize,
    }

    impl Mapping {
        fn anonymous(len: usize) -> Mapping {
            // SAFETY: a fresh private anonymous mapping: no address is asked for, no file is
            // involved, and the result is checked before use.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(at, libc::MAP_FAILED, "mmap of {len} anonymous bytes failed");
            Mapping { at: at.cast(), len }
        }

        fn shared_file(file: &std::fs::File, len: usize) -> Mapping {
            use std::os::fd::AsRawFd;
            // SAFETY: maps `len` bytes of a file this process just created and sized to `len`,
            // which nothing else writes; the result is checked before use.
            let at = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(at, libc::MAP_FAILED, "mmap of the {len}-byte file failed");
            Mapping { at: at.cast(), len }
        }

        /// Nanoseconds per page to write one byte into every page.
        fn touch(&self) -> f64 {
            let start = Instant::now();
            for offset in (0..self.len).step_by(PAGE) {
                // SAFETY: `offset < len`, inside the mapping, which is writable and lives as
                // long as `self`; a volatile write so that every page is really written.
                unsafe { self.at.add(offset).write_volatile(1) };
            }
            start.elapsed().as_nanos() as f64 / (self.len / PAGE) as f64
        }

        /// As `touch`, but first allocates the blocks of each 1 MiB chunk with `fallocate`
        /// as the writes reach it, as the log does.
        fn touch_reserving(&self, file: &std::fs::File) -> f64 {
            use std::os::fd::AsRawFd;
            const CHUNK: usize = 1 << 20;
            let start = Instant::now();
            for offset in (0..self.len).step_by(PAGE) {
                if offset % CHUNK == 0 {
                    // SAFETY: `fallocate` reads no memory of ours; the descriptor is open.
                    let rc = unsafe {
                        libc::fallocate(file.as_raw_fd(), 0, offset as libc::off_t, CHUNK as _)
                    };
                    assert_eq!(
                        rc,
                        0,
                        "fallocate failed: {}",
                        std::io::Error::last_os_error()
                    );
                }
                // SAFETY: as in `touch`.
                unsafe { self.at.add(offset).write_volatile(1) };
            }
            start.elapsed().as_nanos() as f64 / (self.len / PAGE) as f64
        }

        fn dont_need(&self) {
            // SAFETY: the whole mapping, private and anonymous: its pages read as zeros after
            // this, which nothing here relies on otherwise.
            let rc = unsafe { libc::madvise(self.at.cast(), self.len, libc::MADV_DONTNEED) };
            assert_eq!(rc, 0, "madvise(MADV_DONTNEED) failed");
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping this value made, unmapped once; no reference into it
            // outlives `self`.
            unsafe { libc::munmap(self.at.cast(), self.len) };
        }
    }

    /// A fresh scratch file of `FILE_BYTES`, blocks allocated if `fallocate`; the first and
    /// second write of each of its pages through a shared mapping, and a write of each through a
    /// new mapping once the file is synced.
    fn file_round(fallocate: Reserve) -> (f64, f64, f64) {
        use std::os::fd::AsRawFd;
        let path = std::env::temp_dir().join(format!("larder-page-cost-{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create the scratch file");
        file.set_len(FILE_BYTES as u64)
            .expect("size the scratch file");
        if fallocate == Reserve::Upfront {
            for offset in (0..FILE_BYTES).step_by(1 << 20) {
                // SAFETY: `fallocate` reads no memory of ours; the descriptor is open.
                let rc =
                    unsafe { libc::fallocate(file.as_raw_fd(), 0, offset as libc::off_t, 1 << 20) };
                assert_eq!(
                    rc,
                    0,
                    "fallocate failed: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        let map = Mapping::shared_file(&file, FILE_BYTES);
        let first = if fallocate == Reserve::AsWritten {
            map.touch_reserving(&file)
        } else {
            map.touch()
        };
        let resident = map.touch();
        drop(map);
        // A recycled segment's case: its pages are cached and clean (synced), and a new
        // mapping writes them again.
        file.sync_all().expect("sync the scratch file");
        let remapped = Mapping::shared_file(&file, FILE_BYTES).touch();
        drop(file);
        std::fs::remove_file(&path).expect("remove the scratch file");
        (first, resident, remapped)
    }

    /// When a scratch file's blocks are allocated.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Reserve {
        /// Never: a sparse file.
        No,
        /// All of them before the first write.
        Upfront,
        /// Each 1 MiB chunk as the writes reach it.
        AsWritten,
    }

    /// Lets memory freed before this call leave the guest (see the module doc).
    fn settle() {
        std::thread::sleep(Duration::from_secs(3));
    }

    pub(crate) fn main() {
        let mut rows: [(&str, Vec<f64>); 9] = [
            ("anonymous, first touch", Vec::new()),
            ("anonymous, resident", Vec::new()),
            ("anonymous, after MADV_DONTNEED", Vec::new()),
            ("file, first touch", Vec::new()),
            ("file, fallocated, first touch", Vec::new()),
            ("file, fallocated as written, first touch", Vec::new()),
            ("file, first touch, just after 1 GiB was freed", Vec::new()),
            ("file, resident", Vec::new()),
            ("file, cached and synced, through a new mapping", Vec::new()),
        ];
        for _ in 0..3 {
            settle();
            let anon = Mapping::anonymous(ANON_BYTES);
            rows[0].1.push(anon.touch());
            rows[1].1.push(anon.touch());
            anon.dont_need();
            rows[2].1.push(anon.touch());
            drop(anon);
            settle();
            let (first, resident, remapped) = file_round(Reserve::No);
            rows[3].1.push(first);
            rows[7].1.push(resident);
            rows[8].1.push(remapped);
            settle();
            rows[4].1.push(file_round(Reserve::Upfront).0);
            settle();
            rows[5].1.push(file_round(Reserve::AsWritten).0);
            settle();
            let anon = Mapping::anonymous(ANON_BYTES);
            anon.touch();
            drop(anon);
            rows[6].1.push(file_round(Reserve::No).0);
        }
        println!("| memory | ns per 4 KiB page, three rounds | median |");
        println!("|---|---|---:|");
        for (name, runs) in &mut rows {
            let each: Vec<String> = runs.iter().map(|ns| format!("{ns:.0}")).collect();
            runs.sort_by(f64::total_cmp);
            println!(
                "| {name} | {} | {:.0} |",
                each.join(", "),
                runs[runs.len() / 2]
            );
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("page_cost measures Linux page faults; it does nothing on this platform");
}
