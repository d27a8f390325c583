//! The image messages as prost structs, one per message of CRIU's image format, with CRIU's
//! message names (in `UpperCamelCase`), field names, numbers and types.
//!
//! Proto2 semantics: `required` fields are plain values, `optional` ones are `Option`s (their
//! presence is part of the image and of crit's JSON), repeated scalars are unpacked. Enum fields
//! are `i32` as usual with prost; the enum types ([`FdTypes`], [`CoreEntryMarch`], ...) convert.
//! Each struct has a static descriptor (`PSTREE_ENTRY` for [`PstreeEntry`], ...) reachable through
//! [`Described::DESC`].
//!
//! Nested enums of the format are flattened: `core_entry.march` is [`CoreEntryMarch`].

#![allow(clippy::all, missing_docs)]

use crate::schema::{Described, EnumDesc, FieldDesc, FieldOpts, Kind, Label, MessageDesc};

include!(concat!(env!("OUT_DIR"), "/schema_gen.rs"));
