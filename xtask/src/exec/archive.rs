//! Image archives without saving again: a `docker-archive` saved once per image id is kept in
//! the cache, and each run gets its own copy naming the run's reference (the archive's
//! `manifest.json` `RepoTags` rewritten; every other entry copied as it is, by the kernel).
//! So an unchanged image costs a file copy instead of `podman save`, and what is loaded into
//! the cluster still names exactly the run's reference (Phase 0).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

const BLOCK: u64 = 512;

/// One entry of a tar: name, where its data starts, its size.
struct Entry {
    name: String,
    header_at: u64,
    data_at: u64,
    size: u64,
}

fn entries(f: &mut File) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut at = 0u64;
    let mut header = [0u8; BLOCK as usize];
    loop {
        f.seek(SeekFrom::Start(at))?;
        if f.read_exact(&mut header).is_err() || header.iter().all(|b| *b == 0) {
            return Ok(out);
        }
        let name = cstr(&header[0..100]);
        let prefix = cstr(&header[345..500]);
        let size = octal(&header[124..136]).context("a tar header with a bad size")?;
        let name = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if header[156] == b'x' || header[156] == b'g' || header[156] == b'L' {
            bail!("the archive uses extended tar headers, which are not rewritten here");
        }
        out.push(Entry {
            name,
            header_at: at,
            data_at: at + BLOCK,
            size,
        });
        at += BLOCK + size.div_ceil(BLOCK) * BLOCK;
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn octal(b: &[u8]) -> Option<u64> {
    let s = cstr(b);
    u64::from_str_radix(s.trim().trim_matches('\0'), 8).ok()
}

/// A ustar header for a regular file.
fn header(name: &str, size: u64) -> [u8; BLOCK as usize] {
    let mut h = [0u8; BLOCK as usize];
    h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// Copies the docker-archive `from` to `to` with `manifest.json` naming only `reference`
/// (and no legacy `repositories` file). Returns the bytes written.
pub fn rename(from: &Path, to: &Path, reference: &str) -> Result<u64> {
    let mut src = File::open(from).with_context(|| format!("reading {}", from.display()))?;
    let list = entries(&mut src).with_context(|| format!("reading {}", from.display()))?;
    let manifest = list
        .iter()
        .find(|e| e.name == "manifest.json")
        .with_context(|| format!("{} has no manifest.json", from.display()))?;
    let mut text = vec![0u8; manifest.size as usize];
    src.seek(SeekFrom::Start(manifest.data_at))?;
    src.read_exact(&mut text)?;
    let mut m: serde_json::Value = serde_json::from_slice(&text).context("manifest.json")?;
    let images = m.as_array_mut().context("manifest.json is not a list")?;
    if images.len() != 1 {
        bail!(
            "{} holds {} images; one was expected",
            from.display(),
            images.len()
        );
    }
    images[0]["RepoTags"] = serde_json::json!([reference]);
    let new_manifest = serde_json::to_vec(&m)?;
    let mut dst = File::create(to).with_context(|| format!("writing {}", to.display()))?;
    for e in list
        .iter()
        .filter(|e| e.name != "manifest.json" && e.name != "repositories")
    {
        let len = BLOCK + e.size.div_ceil(BLOCK) * BLOCK;
        src.seek(SeekFrom::Start(e.header_at))?;
        // `io::copy` between files is a kernel copy (copy_file_range) on Linux.
        std::io::copy(&mut (&mut src).take(len), &mut dst)?;
    }
    dst.write_all(&header("manifest.json", new_manifest.len() as u64))?;
    dst.write_all(&new_manifest)?;
    let pad = (BLOCK - new_manifest.len() as u64 % BLOCK) % BLOCK;
    dst.write_all(&vec![0u8; (pad + 2 * BLOCK) as usize])?;
    dst.flush()?;
    Ok(dst.metadata()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data) in files {
            out.extend_from_slice(&header(name, data.len() as u64));
            out.extend_from_slice(data);
            let pad = (BLOCK - data.len() as u64 % BLOCK) % BLOCK;
            out.extend(std::iter::repeat_n(0u8, pad as usize));
        }
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }

    #[test]
    fn the_copy_names_only_the_run_reference_and_keeps_every_layer() {
        let dir = std::env::temp_dir().join(format!("xtask-archive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["localhost/pg:run-1"],"Layers":["l1/layer.tar"]}]"#;
        let layer = vec![7u8; 1500];
        std::fs::write(
            dir.join("a.tar"),
            tar(&[
                ("c.json", b"{}"),
                ("l1/layer.tar", &layer),
                ("manifest.json", manifest),
                ("repositories", b"{}"),
            ]),
        )
        .unwrap();
        rename(&dir.join("a.tar"), &dir.join("b.tar"), "localhost/pg:run-2").unwrap();
        let mut f = File::open(dir.join("b.tar")).unwrap();
        let list = entries(&mut f).unwrap();
        let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["c.json", "l1/layer.tar", "manifest.json"]);
        let layer_entry = &list[1];
        let mut got = vec![0u8; layer_entry.size as usize];
        f.seek(SeekFrom::Start(layer_entry.data_at)).unwrap();
        f.read_exact(&mut got).unwrap();
        assert_eq!(got, layer);
        let m = &list[2];
        let mut text = vec![0u8; m.size as usize];
        f.seek(SeekFrom::Start(m.data_at)).unwrap();
        f.read_exact(&mut text).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v[0]["RepoTags"], serde_json::json!(["localhost/pg:run-2"]));
        assert_eq!(v[0]["Layers"], serde_json::json!(["l1/layer.tar"]));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
