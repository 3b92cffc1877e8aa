//! A minimal tar reader (ustar, GNU long names, pax) and image names from `podman save` archives.

use serde_json::Value;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

/// One regular entry's header as the reader resolved it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub typeflag: u8,
}

/// Reads tar headers sequentially; data the caller does not read is skipped with a seek.
pub struct TarReader<R> {
    inner: R,
    /// Bytes of the current entry's data (plus padding) not yet consumed.
    pending: u64,
}

fn octal(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for large sizes.
        return Ok(field[1..].iter().fold(0u64, |acc, b| acc << 8 | *b as u64));
    }
    let text = String::from_utf8_lossy(field);
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(digits, 8).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad tar number {digits:?}"),
        )
    })
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

impl<R: Read + Seek> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader { inner, pending: 0 }
    }

    fn skip_pending(&mut self) -> io::Result<()> {
        if self.pending > 0 {
            self.inner.seek_relative(self.pending as i64)?;
            self.pending = 0;
        }
        Ok(())
    }

    fn read_data(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        self.inner.read_exact(&mut buf)?;
        self.pending = padded(size) - size;
        self.skip_pending()?;
        Ok(buf)
    }

    /// The next entry (long-name and pax records applied), or None at the end of the archive.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        self.skip_pending()?;
        let mut long_name: Option<String> = None;
        loop {
            let mut h = [0u8; 512];
            match self.inner.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            if octal(&h[148..156])? != sum {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "tar header checksum mismatch",
                ));
            }
            let size = octal(&h[124..136])?;
            let typeflag = h[156];
            match typeflag {
                b'L' => {
                    let data = self.read_data(size)?;
                    long_name = Some(cstr(&data));
                }
                b'x' => {
                    let data = self.read_data(size)?;
                    if let Some(p) = pax_path(&data) {
                        long_name = Some(p);
                    }
                }
                b'g' | b'K' => {
                    self.read_data(size)?;
                }
                _ => {
                    let name = long_name.take().unwrap_or_else(|| {
                        let base = cstr(&h[0..100]);
                        let prefix = if &h[257..262] == b"ustar" {
                            cstr(&h[345..500])
                        } else {
                            String::new()
                        };
                        if prefix.is_empty() {
                            base
                        } else {
                            format!("{prefix}/{base}")
                        }
                    });
                    // Only regular files carry data; links and directories have size 0 here.
                    let data_size = if matches!(typeflag, b'0' | 0 | b'7') {
                        size
                    } else {
                        0
                    };
                    self.pending = padded(data_size);
                    return Ok(Some(Entry {
                        name,
                        size: data_size,
                        typeflag,
                    }));
                }
            }
        }
    }

    /// Reads the data of the entry just returned by `next_entry`.
    pub fn read_entry(&mut self, entry: &Entry) -> io::Result<Vec<u8>> {
        self.read_data(entry.size)
    }
}

/// The `path=` record of a pax extended header.
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|line| {
        let (_, rec) = line.split_once(' ')?;
        rec.strip_prefix("path=").map(String::from)
    })
}

fn normal(name: &str) -> &str {
    name.trim_start_matches("./")
}

/// Image references and ids in an archive written by `podman save` (docker-archive: the
/// `RepoTags` of `manifest.json`; oci-archive: the `io.containerd.image.name` or
/// `org.opencontainers.image.ref.name` annotations of `index.json`), exactly as written.
pub fn image_refs(path: &Path) -> Result<Vec<(String, String)>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("open {}: {}", path.display(), io_msg(&e)))?;
    let mut tar = TarReader::new(BufReader::new(file));
    let mut manifest = None;
    let mut index = None;
    while let Some(entry) = tar
        .next_entry()
        .map_err(|e| format!("reading {}: {e}", path.display()))?
    {
        match normal(&entry.name) {
            "manifest.json" => manifest = Some(tar.read_entry(&entry).map_err(|e| e.to_string())?),
            "index.json" => index = Some(tar.read_entry(&entry).map_err(|e| e.to_string())?),
            _ => {}
        }
    }
    let parse = |b: &[u8], what: &str| -> Result<Value, String> {
        serde_json::from_slice(b).map_err(|e| format!("invalid {what} in {}: {e}", path.display()))
    };
    let mut refs = Vec::new();
    if let Some(m) = manifest {
        for img in parse(&m, "manifest.json")?.as_array().into_iter().flatten() {
            let id = img["Config"]
                .as_str()
                .unwrap_or("")
                .trim_end_matches(".json")
                .to_string();
            for tag in img["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                refs.push((tag.to_string(), id.clone()));
            }
        }
    } else if let Some(i) = index {
        for m in parse(&i, "index.json")?["manifests"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let ann = &m["annotations"];
            let name = ann["io.containerd.image.name"]
                .as_str()
                .or(ann["org.opencontainers.image.ref.name"].as_str());
            if let Some(name) = name {
                refs.push((
                    name.to_string(),
                    m["digest"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    } else {
        return Err(format!(
            "{} is not an image archive (no manifest.json or index.json)",
            path.display()
        ));
    }
    Ok(refs)
}

/// Go-style wording for an io error (`no such file or directory`).
pub fn io_msg(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Normalises an image reference the way kubelet/containerd do: a first component without `.`
/// or `:` (and not `localhost`) means Docker Hub (`docker.io/`, plus `library/` for single names),
/// and no tag or digest means `:latest`. `localhost/x:1` stays as it is; `x:1` becomes
/// `docker.io/library/x:1`.
pub fn normalize_ref(reference: &str) -> String {
    let (first, _) = reference.split_once('/').unwrap_or(("", reference));
    let has_domain = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !full.contains('@') {
        full.push_str(":latest");
    }
    full
}

/// The tag of a reference (`None` when it has none, or only a digest).
pub fn tag_of(reference: &str) -> Option<&str> {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    let last = without_digest.rsplit('/').next().unwrap_or("");
    last.split_once(':').map(|(_, t)| t)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Cursor;

    /// A hand-written ustar writer for tests (also used to build a GNU long-name entry).
    pub fn tar_entry(out: &mut Vec<u8>, name: &str, data: &[u8], typeflag: u8) {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    pub fn docker_archive(tags: &[&str]) -> Vec<u8> {
        let manifest =
            serde_json::json!([{"Config": "abc123.json", "RepoTags": tags, "Layers": ["l1.tar"]}]);
        let mut t = Vec::new();
        tar_entry(&mut t, "l1.tar", &[7u8; 1000], b'0');
        tar_entry(&mut t, "abc123.json", b"{}", b'0');
        tar_entry(
            &mut t,
            "manifest.json",
            manifest.to_string().as_bytes(),
            b'0',
        );
        t.extend_from_slice(&[0u8; 1024]);
        t
    }

    #[test]
    fn reads_entries_and_skips_data() {
        let bytes = docker_archive(&["localhost/x:1"]);
        let mut r = TarReader::new(Cursor::new(bytes));
        let names: Vec<String> = std::iter::from_fn(|| r.next_entry().unwrap())
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["l1.tar", "abc123.json", "manifest.json"]);
    }

    #[test]
    fn gnu_long_name_and_pax_path() {
        let long = format!("{}/manifest.json", "d".repeat(150));
        let mut t = Vec::new();
        tar_entry(
            &mut t,
            "././@LongLink",
            format!("{long}\0").as_bytes(),
            b'L',
        );
        tar_entry(&mut t, &long[..100], b"hello", b'0');
        tar_entry(
            &mut t,
            "PaxHeaders/x",
            b"30 path=pax/very/long/name.txt\n",
            b'x',
        );
        tar_entry(&mut t, "short", b"", b'0');
        tar_entry(&mut t, "link", b"", b'2');
        let mut r = TarReader::new(Cursor::new(t));
        let e = r.next_entry().unwrap().unwrap();
        assert_eq!(e.name, long);
        assert_eq!(r.read_entry(&e).unwrap(), b"hello");
        assert_eq!(
            r.next_entry().unwrap().unwrap().name,
            "pax/very/long/name.txt"
        );
        assert_eq!(r.next_entry().unwrap().unwrap().typeflag, b'2');
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn bad_checksum_is_an_error() {
        let mut bytes = docker_archive(&["x:1"]);
        bytes[0] ^= 1;
        assert!(TarReader::new(Cursor::new(bytes)).next_entry().is_err());
    }

    #[test]
    fn refs_from_docker_and_oci_archives() {
        let dir =
            std::env::temp_dir().join(format!("fake-kube-archive-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let docker = dir.join("d.tar");
        std::fs::write(&docker, docker_archive(&["localhost/x:1", "localhost/x:2"])).unwrap();
        assert_eq!(
            image_refs(&docker).unwrap(),
            [
                ("localhost/x:1".to_string(), "abc123".to_string()),
                ("localhost/x:2".into(), "abc123".into())
            ]
        );
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"digest": "sha256:aa", "annotations": {"org.opencontainers.image.ref.name": "localhost/y:3"}}]});
        let mut t = Vec::new();
        tar_entry(&mut t, "oci-layout", b"{}", b'0');
        tar_entry(&mut t, "./index.json", index.to_string().as_bytes(), b'0');
        let oci = dir.join("o.tar");
        std::fs::write(&oci, t).unwrap();
        assert_eq!(
            image_refs(&oci).unwrap(),
            [("localhost/y:3".to_string(), "sha256:aa".to_string())]
        );
        let mut t = Vec::new();
        tar_entry(&mut t, "hello.txt", b"hi", b'0');
        std::fs::write(&oci, t).unwrap();
        assert!(image_refs(&oci)
            .unwrap_err()
            .contains("not an image archive"));
        assert!(image_refs(&dir.join("missing.tar"))
            .unwrap_err()
            .contains("no such file or directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reference_normalisation() {
        assert_eq!(normalize_ref("localhost/x:1"), "localhost/x:1");
        assert_eq!(normalize_ref("x:1"), "docker.io/library/x:1");
        assert_eq!(normalize_ref("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_ref("team/app:2"), "docker.io/team/app:2");
        assert_eq!(
            normalize_ref("docker.io/library/x:1"),
            "docker.io/library/x:1"
        );
        assert_eq!(
            normalize_ref("registry:5000/app"),
            "registry:5000/app:latest"
        );
        assert_eq!(normalize_ref("localhost/x"), "localhost/x:latest");
        assert_eq!(
            normalize_ref("quay.io/a/b@sha256:00"),
            "quay.io/a/b@sha256:00"
        );
        assert_eq!(tag_of("localhost/x:1"), Some("1"));
        assert_eq!(tag_of("registry:5000/app"), None);
        assert_eq!(tag_of("app@sha256:00"), None);
    }
}
