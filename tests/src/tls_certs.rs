//! Test certificates for `--tls` (the page server and lazy-pages connections): a CA and
//! certificates it signs, made with the `openssl` command line tool in a test's directory.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Runs `openssl ARGS` in `dir`, asserting it succeeds.
pub fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Makes a CA `NAME-ca.pem`/`NAME-ca.key` in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    let (cert, key, subj) = (
        format!("{name}-ca.pem"),
        format!("{name}-ca.key"),
        format!("/CN={name} test CA"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// Makes `NAME.pem`/`NAME.key` in `dir`, signed by CA `ca`, for the host `host` (its CN and
/// its subject alternative name).
pub fn make_cert(dir: &Path, ca: &str, name: &str, host: &str) {
    let (cert, key, csr, ext) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    let san = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("IP:{host}")
    } else {
        format!("DNS:{host}")
    };
    fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName={san}\n"
        ),
    )
    .unwrap();
    let subj = format!("/CN={host}");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subj,
        ],
    );
    let (ca_cert, ca_key) = (format!("{ca}-ca.pem"), format!("{ca}-ca.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_cert,
            "-CAkey",
            &ca_key,
            "-set_serial",
            "7",
            "-days",
            "2",
            "-out",
            &cert,
            "-extfile",
            &ext,
        ],
    );
}

/// The `--tls` arguments for the CA `ca` and the certificate `name`, files in `dir`.
pub fn tls_args(dir: &Path, ca: &str, name: &str) -> Vec<String> {
    let p = |f: String| dir.join(f).to_str().unwrap().to_string();
    vec![
        "--tls".into(),
        "--tls-cacert".into(),
        p(format!("{ca}-ca.pem")),
        "--tls-cert".into(),
        p(format!("{name}.pem")),
        "--tls-key".into(),
        p(format!("{name}.key")),
    ]
}
