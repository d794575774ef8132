//! The on-disk cache of compiled kernels (Vulkan: SPIR-V and the driver's pipeline cache;
//! CUDA: cubins), one set of rules for every backend.
//!
//! Where it lives is the caller's choice, [`Cache`]: no cache (the default of every
//! backend's options), or a folder. The engine takes the folder from the environment
//! through [`Cache::from_env_values`], which is where the rules are written down:
//!
//! - `$KILN_CACHE_DIR/<backend>` when `KILN_CACHE_DIR` is set; set but empty, no cache;
//! - else `$XDG_CACHE_HOME/kiln/<backend>`;
//! - else `$HOME/.cache/kiln/<backend>`;
//! - else no cache.
//!
//! A file is written to a temporary name and renamed, so a reader never sees half of one,
//! and carries a header (magic, tag, length, hash of the body): a file cut short, damaged
//! or written by something else is a miss, and the entry is built and written again. A
//! cache that cannot be written only makes the next start slower; it is never an error.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Where a backend keeps compiled kernels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cache {
    /// No disk cache: every load compiles.
    #[default]
    Off,
    /// This folder (the backend's own: nothing else is written there).
    Dir(PathBuf),
}

impl Cache {
    /// The cache of `backend` by the rules above, from the values of `KILN_CACHE_DIR`,
    /// `XDG_CACHE_HOME` and `HOME` (None: unset). The caller reads the environment;
    /// library crates never do.
    pub fn from_env_values(
        backend: &str,
        kiln_cache_dir: Option<&OsStr>,
        xdg_cache_home: Option<&OsStr>,
        home: Option<&OsStr>,
    ) -> Cache {
        let set = |v: Option<&OsStr>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = match kiln_cache_dir {
            Some(dir) => set(Some(dir)),
            None => set(xdg_cache_home)
                .map(|d| d.join("kiln"))
                .or_else(|| set(home).map(|h| h.join(".cache").join("kiln"))),
        };
        root.map_or(Cache::Off, |r| Cache::Dir(r.join(backend)))
    }
}

/// What a cache did since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries read from disk.
    pub hits: usize,
    /// Entries built (compiled), and written when there is a folder.
    pub built: usize,
}

/// The first bytes of every cache file.
const MAGIC: &[u8; 8] = b"KILNCCH1";
/// FNV-1a offset bases: the published one, and a second for the upper half of a key.
const FNV_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_BASIS_2: u64 = 0x6C62_272E_07BB_0142;

/// FNV-1a, 64 bits, over `parts` in order from `basis`: a hash that stays the same
/// across Rust releases (a cache outlives the binary that wrote it).
pub fn fnv1a(basis: u64, parts: &[&[u8]]) -> u64 {
    parts.iter().flat_map(|p| p.iter()).fold(basis, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// A 128-bit key of `parts` as 32 hex digits (two FNV-1a hashes of different bases),
/// for file names.
pub fn key(parts: &[&[u8]]) -> String {
    let (a, b) = (fnv1a(FNV_BASIS, parts), fnv1a(FNV_BASIS_2, parts));
    format!("{a:016x}{b:016x}")
}

/// An opened cache: files by name under its folder, with counts of hits and builds.
/// Shared by threads compiling at once (the counts are atomic, writes go through their
/// own temporary files).
#[derive(Debug, Default)]
pub struct DiskCache {
    dir: Option<PathBuf>,
    hits: AtomicUsize,
    built: AtomicUsize,
}

impl DiskCache {
    pub fn new(cache: &Cache) -> DiskCache {
        DiskCache {
            dir: match cache {
                Cache::Off => None,
                Cache::Dir(d) => Some(d.clone()),
            },
            ..DiskCache::default()
        }
    }

    /// The folder, when there is one.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            built: self.built.load(Ordering::Relaxed),
        }
    }

    /// The body stored as `file` (a path relative to the folder) with `tag`, when the
    /// file is there, whole, and ours.
    pub fn read(&self, file: &str, tag: u64) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.dir.as_ref()?.join(file)).ok()?;
        open_envelope(&bytes, tag).map(<[u8]>::to_vec)
    }

    /// Store `body` as `file` with `tag` (folders made as needed); failures are ignored.
    pub fn write(&self, file: &str, tag: u64, body: &[u8]) {
        if let Some(dir) = &self.dir {
            write_atomically(&dir.join(file), &envelope(tag, body));
        }
    }

    /// The body of `file` from disk when `valid` accepts it, else `build`'s, written back.
    /// `tag` is checked with the file (e.g. the length of the source it was built from).
    pub fn get_or_build<E>(
        &self,
        file: &str,
        tag: u64,
        valid: impl Fn(&[u8]) -> bool,
        build: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        if let Some(body) = self.read(file, tag).filter(|b| valid(b)) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(body);
        }
        let body = build()?;
        self.built.fetch_add(1, Ordering::Relaxed);
        self.write(file, tag, &body);
        Ok(body)
    }
}

/// The magic, the tag, the body's length and hash, the body: a file cut short or damaged
/// anywhere fails [`open_envelope`].
fn envelope(tag: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a(FNV_BASIS, &[body]).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn open_envelope(bytes: &[u8], tag: u64) -> Option<&[u8]> {
    let (head, body) = bytes.strip_prefix(MAGIC)?.split_at_checked(24)?;
    let word = |i: usize| {
        head.get(8 * i..8 * i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    (word(0)? == tag && word(1)? == body.len() as u64 && word(2)? == fnv1a(FNV_BASIS, &[body]))
        .then_some(body)
}

/// Write through a temporary file and a rename, so a reader never sees half a file;
/// failures are ignored (the cache is an optimisation).
fn write_atomically(path: &Path, bytes: &[u8]) {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_follows_the_rules() {
        let os = |s: &'static str| Some(OsStr::new(s));
        let dir = |s: &str| Cache::Dir(PathBuf::from(s));
        let cache = |k, x, h| Cache::from_env_values("cuda", k, x, h);
        assert_eq!(cache(os("/c"), os("/x"), os("/h")), dir("/c/cuda"));
        assert_eq!(
            cache(os(""), os("/x"), os("/h")),
            Cache::Off,
            "set empty: off"
        );
        assert_eq!(cache(None, os("/x"), os("/h")), dir("/x/kiln/cuda"));
        assert_eq!(cache(None, os(""), os("/h")), dir("/h/.cache/kiln/cuda"));
        assert_eq!(cache(None, None, os("")), Cache::Off);
        assert_eq!(cache(None, None, None), Cache::Off);
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // FNV-1a 64 of "a" (the reference test vector): the cache must not depend on
        // std's unstable hasher.
        assert_eq!(fnv1a(FNV_BASIS, &[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key(&[b"a", b"b"]), key(&[b"ab"]));
        assert_ne!(key(&[b"a"]), key(&[b"b"]));
    }

    #[test]
    fn entries_are_hit_and_damaged_files_rebuilt() {
        let dir = std::env::temp_dir().join(format!("kiln-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = DiskCache::new(&Cache::Dir(dir.clone()));
        let build = |body: &'static [u8]| move || Ok::<_, ()>(body.to_vec());
        let any = |_: &[u8]| true;
        assert_eq!(
            cache.get_or_build("sub/a.bin", 3, any, build(b"abc")),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            cache.get_or_build("sub/a.bin", 3, any, build(b"new")),
            Ok(b"abc".to_vec())
        );
        assert_eq!(cache.stats(), CacheStats { hits: 1, built: 1 });
        // Another tag, a body the caller refuses, a damaged file: built again.
        assert_eq!(
            cache.get_or_build("sub/a.bin", 4, any, build(b"4")),
            Ok(b"4".to_vec())
        );
        let refuse = |b: &[u8]| b != b"4";
        assert_eq!(
            cache.get_or_build("sub/a.bin", 4, refuse, build(b"5")),
            Ok(b"5".to_vec())
        );
        let path = dir.join("sub/a.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(cache.read("sub/a.bin", 4), None);
        std::fs::write(&path, b"KILNCCH1 short").unwrap();
        assert_eq!(cache.read("sub/a.bin", 4), None);
        // No folder: always built, nothing written.
        let off = DiskCache::new(&Cache::Off);
        assert_eq!(
            off.get_or_build("a", 0, any, build(b"x")),
            Ok(b"x".to_vec())
        );
        assert_eq!(
            off.get_or_build("a", 0, any, build(b"x")),
            Ok(b"x".to_vec())
        );
        assert_eq!(off.stats(), CacheStats { hits: 0, built: 2 });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
