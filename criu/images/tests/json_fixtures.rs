//! Our JSON for every CRIU 4.2 fixture image equals what CRIU's own `crit decode --pretty`
//! printed, value for value and character for character; and JSON encodes back to the same bytes.

mod fixture_dir;
use fixture_dir::fixtures;

use criu_images::json::{self, DecodeOptions};

#[test]
fn pretty_json_equals_crit_output_for_every_fixture() {
    let mut checked = 0;
    for set in ["single", "tree"] {
        let dir = fixtures().join(set);
        for e in std::fs::read_dir(dir.join("crit-json")).unwrap() {
            let jpath = e.unwrap().path();
            let name = jpath
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".json")
                .unwrap()
                .to_string();
            let ipath = dir.join(&name);
            let bytes = std::fs::read(&ipath).unwrap();
            let want_text = std::fs::read_to_string(&jpath).unwrap();
            let want: serde_json::Value = serde_json::from_str(&want_text).unwrap();
            let got = json::decode_image(&bytes, &ipath, DecodeOptions::pretty())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, want, "{set}/{name}: JSON differs from crit's");
            assert_eq!(
                json::to_crit_string(&got, true),
                want_text,
                "{set}/{name}: text differs from crit's"
            );
            // Encoding crit's own JSON gives back the image, byte for byte.
            let back = json::encode_image(&want, &jpath).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, bytes, "{set}/{name}: encode(decode(x)) != x");
            // Plain (non-pretty) JSON round-trips too.
            let plain = json::decode_image(&bytes, &ipath, DecodeOptions::default()).unwrap();
            assert_eq!(
                json::encode_image(&plain, &ipath).unwrap(),
                bytes,
                "{set}/{name}: plain round trip"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 39);
}

#[test]
fn info_counts_entries() {
    let dir = fixtures().join("single");
    let pm = std::fs::read(dir.join("pagemap-12791.img")).unwrap();
    let i = json::info(&pm, "pagemap-12791.img".as_ref()).unwrap();
    assert_eq!(i, serde_json::json!({"magic": "PAGEMAP", "count": 12}));
    let core = std::fs::read(dir.join("core-12791.img")).unwrap();
    let i = json::info(&core, "core-12791.img".as_ref()).unwrap();
    assert_eq!(i, serde_json::json!({"magic": "CORE", "count": 1}));
}
