//! `pycriu._images`: the binary side of `pycriu.images`, on the criu-images crate that crit
//! uses, so Python sees exactly the documents `crit decode` prints and `crit encode` reads.
//!
//! Documents cross as crit's JSON text (`pycriu.images` turns it into dicts with `json`), binary
//! images as `bytes`. Every error is a `ValueError` naming what was wrong; no input panics.

use std::path::Path;

use criu_images::json::{self, DecodeOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The name errors give the image: Python hands over bytes, not a file.
const NAME: &str = "<image>";

fn err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// `decode(data, pretty=False, nopl=False) -> str`: a binary image as crit's JSON document.
#[pyfunction]
#[pyo3(signature = (data, pretty = false, nopl = false))]
fn decode(data: &[u8], pretty: bool, nopl: bool) -> PyResult<String> {
    let opts = DecodeOptions {
        pretty,
        no_payload: nopl,
    };
    let v = json::decode_image(data, Path::new(NAME), opts).map_err(err)?;
    Ok(json::to_crit_string(&v, false))
}

/// `encode(doc) -> bytes`: crit's JSON document (text) as the binary image.
#[pyfunction]
fn encode<'py>(py: Python<'py>, doc: &str) -> PyResult<Bound<'py, PyBytes>> {
    let v = json::parse_json(doc.as_bytes(), Path::new(NAME)).map_err(err)?;
    let bytes = json::encode_image(&v, Path::new(NAME)).map_err(err)?;
    Ok(PyBytes::new(py, &bytes))
}

/// `info(data) -> str`: the image's magic and entry count (`crit info`), as JSON.
#[pyfunction]
fn info(data: &[u8]) -> PyResult<String> {
    let v = json::info(data, Path::new(NAME)).map_err(err)?;
    Ok(json::to_crit_string(&v, false))
}

/// The module.
#[pymodule]
fn _images(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add("CRIU_IMAGES_VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
