//! The PE loader: maps a driver image (PE32+, x86_64) into this process the
//! way the NT loader does for a kernel module: headers and sections at their
//! RVAs in one reservation, base relocations applied for the address the
//! image got, every import resolved by name against ntsim's export table
//! ([`crate::exports`]), then per-section page protections.
//!
//! Parsing uses the `object` crate; mapping, relocation and binding are
//! written here because no crate loads a PE into memory for execution.
//! A missing import refuses the load and names every missing symbol.

use object::pe::{
    IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_DIR64, IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_WRITE,
};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, Import, PeFile64};
use object::LittleEndian as LE;
use sha2::{Digest, Sha256};
use std::path::Path;

/// A loaded image. The mapping lives as long as this value (the driver's code
/// and data are in it); dropping it unmaps the image.
pub struct Image {
    pub base: usize,
    pub size: usize,
    pub entry: usize,
    /// sha256 of the file's bytes, lower-case hex.
    pub sha256: String,
    /// The imports bound, `dll!name`.
    pub imports: Vec<String>,
}

// SAFETY: the image is plain memory; concurrent use is the driver's business.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: `base..base+size` is the mapping `load` made and nothing
        // of the driver runs any more (the kernel unloads before dropping).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}

/// Loads `path`, resolving imports with `resolve(dll, name)`.
pub fn load(path: &Path, resolve: &dyn Fn(&str, &str) -> Option<usize>) -> Result<Image, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sha256 = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let pe = PeFile64::parse(&*data)
        .map_err(|e| format!("{}: not a PE32+ image: {e}", path.display()))?;
    let nt = pe.nt_headers();
    let opt = nt.optional_header();
    let size = opt.size_of_image() as usize;
    let headers = opt.size_of_headers() as usize;
    let entry_rva = opt.address_of_entry_point() as usize;
    let preferred = opt.image_base();

    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(format!("mmap of {size} bytes failed"));
    }
    let mut img = Image {
        base: base as usize,
        size,
        entry: base as usize + entry_rva,
        sha256,
        imports: Vec::new(),
    };
    // SAFETY: the mapping is `size` bytes, readable and writable, and ours alone.
    let mem = unsafe { std::slice::from_raw_parts_mut(base as *mut u8, size) };
    mem[..headers.min(data.len())].copy_from_slice(&data[..headers.min(data.len())]);
    let sections = pe.section_table();
    for s in sections.iter() {
        let va = s.virtual_address.get(LE) as usize;
        let raw = s.pointer_to_raw_data.get(LE) as usize;
        let n = (s.size_of_raw_data.get(LE) as usize).min(s.virtual_size.get(LE) as usize);
        if va + n > size || raw + n > data.len() {
            return Err(format!(
                "section {} lies outside the image",
                String::from_utf8_lossy(s.raw_name())
            ));
        }
        mem[va..va + n].copy_from_slice(&data[raw..raw + n]);
    }

    // Base relocations (PE format, "The .reloc Section": DIR64 adds the delta).
    let delta = (img.base as u64).wrapping_sub(preferred);
    if let Some(mut blocks) = pe
        .data_directories()
        .relocation_blocks(&*data, &sections)
        .map_err(|e| e.to_string())?
    {
        while let Some(block) = blocks.next().map_err(|e| e.to_string())? {
            for r in block {
                match r.typ {
                    IMAGE_REL_BASED_DIR64 => {
                        let at = r.virtual_address as usize;
                        let v = u64::from_le_bytes(mem[at..at + 8].try_into().unwrap())
                            .wrapping_add(delta);
                        mem[at..at + 8].copy_from_slice(&v.to_le_bytes());
                    }
                    IMAGE_REL_BASED_ABSOLUTE => {}
                    t => return Err(format!("unsupported base relocation type {t}")),
                }
            }
        }
    }

    // Imports: bind every thunk of the IAT by name.
    let mut missing = Vec::new();
    if let Some(table) = pe.import_table().map_err(|e| e.to_string())? {
        let mut descs = table.descriptors().map_err(|e| e.to_string())?;
        while let Some(d) = descs.next().map_err(|e| e.to_string())? {
            let dll =
                String::from_utf8_lossy(table.name(d.name.get(LE)).map_err(|e| e.to_string())?)
                    .into_owned();
            let lookup = if d.original_first_thunk.get(LE) != 0 {
                d.original_first_thunk.get(LE)
            } else {
                d.first_thunk.get(LE)
            };
            let mut thunks = table.thunks(lookup).map_err(|e| e.to_string())?;
            let mut iat = d.first_thunk.get(LE) as usize;
            while let Some(t) = thunks
                .next::<object::pe::ImageNtHeaders64>()
                .map_err(|e| e.to_string())?
            {
                let name = match table
                    .import::<object::pe::ImageNtHeaders64>(t)
                    .map_err(|e| e.to_string())?
                {
                    Import::Name(_, n) => String::from_utf8_lossy(n).into_owned(),
                    Import::Ordinal(o) => format!("#{o}"),
                };
                match resolve(&dll, &name) {
                    Some(addr) => mem[iat..iat + 8].copy_from_slice(&(addr as u64).to_le_bytes()),
                    None => missing.push(format!("{dll}!{name}")),
                }
                img.imports.push(format!("{dll}!{name}"));
                iat += 8;
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "{}: refused: no implementation for import(s) {}",
            path.display(),
            missing.join(", ")
        ));
    }

    // Section protections, as the loader applies them (headers read-only).
    let page = 4096;
    let protect = |from: usize, len: usize, prot: i32| {
        let start = from & !(page - 1);
        let end = (from + len + page - 1) & !(page - 1);
        // SAFETY: a page range inside our own mapping.
        unsafe {
            libc::mprotect(
                (img.base + start) as *mut libc::c_void,
                end.min(size) - start,
                prot,
            )
        };
    };
    protect(0, headers, libc::PROT_READ);
    for s in sections.iter() {
        let c = s.characteristics.get(LE);
        let mut prot = libc::PROT_READ;
        if c & IMAGE_SCN_MEM_WRITE != 0 {
            prot |= libc::PROT_WRITE;
        }
        if c & IMAGE_SCN_MEM_EXECUTE != 0 {
            prot |= libc::PROT_EXEC;
        }
        protect(
            s.virtual_address.get(LE) as usize,
            s.virtual_size.get(LE) as usize,
            prot,
        );
    }
    Ok(img)
}
