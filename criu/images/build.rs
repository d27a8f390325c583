//! Generates the protobuf message structs and their static descriptors from
//! `schema/criu.schema` (our compact transcription of CRIU's image format).
//!
//! Output: `$OUT_DIR/schema_gen.rs`, included by `src/pb.rs`. Offline and deterministic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

struct Field {
    number: u32,
    label: String,
    ty: String,
    name: String,
    opts: Vec<String>,
}

enum Item {
    Enum {
        name: String,
        values: Vec<(i64, String)>,
    },
    Msg {
        name: String,
        fields: Vec<Field>,
    },
}

const SCALARS: &[(&str, &str, &str, &str)] = &[
    // (schema type, prost attr, rust type, descriptor kind)
    ("u32", "uint32", "u32", "U32"),
    ("u64", "uint64", "u64", "U64"),
    ("i32", "int32", "i32", "I32"),
    ("i64", "int64", "i64", "I64"),
    ("s32", "sint32", "i32", "S32"),
    ("s64", "sint64", "i64", "S64"),
    ("bool", "bool", "bool", "Bool"),
    ("str", "string", "::prost::alloc::string::String", "Str"),
    (
        "bytes",
        "bytes = \"vec\"",
        "::prost::alloc::vec::Vec<u8>",
        "Bytes",
    ),
    ("fx32", "fixed32", "u32", "Fixed32"),
    ("fx64", "fixed64", "u64", "Fixed64"),
    ("sfx32", "sfixed32", "i32", "Sfixed32"),
    ("sfx64", "sfixed64", "i64", "Sfixed64"),
    ("f32", "float", "f32", "Float"),
    ("f64", "double", "f64", "Double"),
];

const KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "else", "enum", "extern", "false", "fn", "for", "if",
    "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
    "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await", "dyn",
    "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof", "unsized",
    "virtual", "yield", "try", "gen",
];

fn camel(s: &str) -> String {
    let mut out = String::new();
    for part in s.split('_').filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        let mut chars = lower.chars();
        if let Some(c) = chars.next() {
            out.push(c.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'V');
    }
    out
}

fn upper(s: &str) -> String {
    s.to_ascii_uppercase()
}

fn ident(s: &str) -> String {
    if KEYWORDS.contains(&s) {
        format!("r#{s}")
    } else {
        s.to_string()
    }
}

fn parse(text: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut cur: Option<Item> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let err = |m: &str| format!("schema line {}: {m}: {raw}", n + 1);
        match (w[0], &mut cur) {
            ("enum", None) if w.len() == 2 => {
                cur = Some(Item::Enum {
                    name: w[1].into(),
                    values: Vec::new(),
                })
            }
            ("msg", None) if w.len() == 2 => {
                cur = Some(Item::Msg {
                    name: w[1].into(),
                    fields: Vec::new(),
                })
            }
            ("end", Some(_)) => items.extend(cur.take()),
            (_, Some(Item::Enum { values, .. })) if w.len() == 2 => {
                let v: i64 = w[0].parse().map_err(|_| err("bad enum value"))?;
                values.push((v, w[1].into()));
            }
            (_, Some(Item::Msg { fields, .. })) if w.len() >= 4 => {
                let number: u32 = w[0].parse().map_err(|_| err("bad field number"))?;
                if !["req", "opt", "rep"].contains(&w[1]) {
                    return Err(err("bad label"));
                }
                fields.push(Field {
                    number,
                    label: w[1].into(),
                    ty: w[2].into(),
                    name: w[3].into(),
                    opts: w[4..].iter().map(|s| s.to_string()).collect(),
                });
            }
            _ => return Err(err("cannot parse")),
        }
    }
    if cur.is_some() {
        return Err("schema: unterminated item at end of file".into());
    }
    Ok(items)
}

fn generate(items: &[Item]) -> Result<String, String> {
    let scalars: HashMap<&str, (&str, &str, &str)> =
        SCALARS.iter().map(|&(s, p, r, k)| (s, (p, r, k))).collect();
    let enums: HashSet<&str> = items
        .iter()
        .filter_map(|i| match i {
            Item::Enum { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let msgs: BTreeMap<&str, &Vec<Field>> = items
        .iter()
        .filter_map(|i| match i {
            Item::Msg { name, fields } => Some((name.as_str(), fields)),
            _ => None,
        })
        .collect();

    // Messages that reach themselves through non-repeated message fields need boxing.
    let reaches_self = |start: &str| -> bool {
        let mut stack = vec![start];
        let mut seen = HashSet::new();
        while let Some(m) = stack.pop() {
            for f in msgs.get(m).map(|v| v.iter()).into_iter().flatten() {
                if f.label == "rep" || !msgs.contains_key(f.ty.as_str()) {
                    continue;
                }
                if f.ty == start {
                    return true;
                }
                if seen.insert(f.ty.as_str()) {
                    stack.push(f.ty.as_str());
                }
            }
        }
        false
    };

    let mut o = String::new();
    o.push_str("// @generated by criu/images/build.rs from schema/criu.schema. Do not edit.\n\n");
    for item in items {
        match item {
            Item::Enum { name, values } => {
                let ty = camel(name);
                let _ = writeln!(o, "/// Enum `{name}` of CRIU's image format.");
                o.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]\n#[repr(i32)]\n");
                let _ = writeln!(o, "pub enum {ty} {{");
                let mut used = HashSet::new();
                let mut variants = Vec::new();
                for (v, n) in values {
                    let mut var = camel(n);
                    if !used.insert(var.clone()) {
                        var = format!("{var}{v}");
                        used.insert(var.clone());
                    }
                    let _ = writeln!(o, "    /// `{n}` = {v}");
                    let _ = writeln!(o, "    {var} = {v},");
                    variants.push((var, n, v));
                }
                o.push_str("}\n");
                let _ = writeln!(o, "impl {ty} {{");
                o.push_str(
                    "    /// The value's name as written in the format (and printed by crit).\n",
                );
                o.push_str(
                    "    pub fn as_str_name(&self) -> &'static str {\n        match self {\n",
                );
                for (var, n, _) in &variants {
                    let _ = writeln!(o, "            Self::{var} => \"{n}\",");
                }
                o.push_str("        }\n    }\n}\n");
                let _ = writeln!(
                    o,
                    "/// Descriptor of enum `{name}`.\npub static ENUM_{}: EnumDesc = EnumDesc {{ name: \"{name}\", values: &[",
                    upper(name)
                );
                for (_, n, v) in &variants {
                    let _ = writeln!(o, "    (\"{n}\", {v}),");
                }
                o.push_str("] };\n\n");
            }
            Item::Msg { name, fields } => {
                let ty = camel(name);
                let mut sorted: Vec<&Field> = fields.iter().collect();
                sorted.sort_by_key(|f| f.number);
                let _ = writeln!(o, "/// Message `{name}` of CRIU's image format.");
                o.push_str("#[derive(Clone, PartialEq, ::prost::Message)]\n");
                let _ = writeln!(o, "pub struct {ty} {{");
                for f in &sorted {
                    let label = match f.label.as_str() {
                        "req" => "required",
                        "opt" => "optional",
                        _ => "repeated",
                    };
                    let packed = f.opts.iter().any(|x| x == "packed");
                    let fname = ident(&f.name);
                    let (attr, rty);
                    if let Some((p, r, _)) = scalars.get(f.ty.as_str()) {
                        let numeric = !matches!(f.ty.as_str(), "str" | "bytes");
                        let pk = if f.label == "rep" && numeric && !packed {
                            ", packed = \"false\""
                        } else {
                            ""
                        };
                        attr = format!("{p}, {label}{pk}");
                        rty = r.to_string();
                    } else if enums.contains(f.ty.as_str()) {
                        let pk = if f.label == "rep" && !packed {
                            ", packed = \"false\""
                        } else {
                            ""
                        };
                        attr = format!("enumeration = \"{}\", {label}{pk}", camel(&f.ty));
                        rty = "i32".into();
                    } else if msgs.contains_key(f.ty.as_str()) {
                        let boxed = f.label != "rep" && reaches_self(&f.ty) && f.ty == *name;
                        attr = format!("message, {label}{}", if boxed { ", boxed" } else { "" });
                        rty = if boxed {
                            format!("::prost::alloc::boxed::Box<{}>", camel(&f.ty))
                        } else {
                            camel(&f.ty)
                        };
                    } else {
                        return Err(format!(
                            "message {name}: field {} has unknown type {}",
                            f.name, f.ty
                        ));
                    }
                    let full = match f.label.as_str() {
                        "req" => rty,
                        "opt" => format!("::core::option::Option<{rty}>"),
                        _ => format!("::prost::alloc::vec::Vec<{rty}>"),
                    };
                    let _ = writeln!(
                        o,
                        "    /// Field `{}` = {} ({} {}).",
                        f.name, f.number, f.label, f.ty
                    );
                    let _ = writeln!(o, "    #[prost({attr}, tag = \"{}\")]", f.number);
                    let _ = writeln!(o, "    pub {fname}: {full},");
                }
                o.push_str("}\n");
                let _ = writeln!(
                    o,
                    "impl Described for {ty} {{ const DESC: &'static MessageDesc = &{}; }}",
                    upper(name)
                );
                let _ = writeln!(
                    o,
                    "/// Descriptor of message `{name}`.\npub static {}: MessageDesc = MessageDesc {{ name: \"{name}\", fields: &[",
                    upper(name)
                );
                for f in &sorted {
                    let kind = if let Some((_, _, k)) = scalars.get(f.ty.as_str()) {
                        format!("Kind::{k}")
                    } else if enums.contains(f.ty.as_str()) {
                        format!("Kind::Enum(&ENUM_{})", upper(&f.ty))
                    } else {
                        format!("Kind::Message(&{})", upper(&f.ty))
                    };
                    let label = match f.label.as_str() {
                        "req" => "Label::Required",
                        "opt" => "Label::Optional",
                        _ => "Label::Repeated",
                    };
                    let has = |k: &str| f.opts.iter().any(|x| x == k);
                    let val = |k: &str| {
                        f.opts
                            .iter()
                            .find_map(|x| {
                                x.strip_prefix(&format!("{k}="))
                                    .map(|v| format!("Some(\"{v}\")"))
                            })
                            .unwrap_or_else(|| "None".into())
                    };
                    let _ = writeln!(
                        o,
                        "    FieldDesc {{ name: \"{}\", number: {}, label: {label}, kind: {kind}, opts: FieldOpts {{ hex: {}, ipadd: {}, dev: {}, odev: {}, packed: {}, flags: {}, dict: {}, conv: {} }} }},",
                        f.name,
                        f.number,
                        has("hex"),
                        has("ipadd"),
                        has("dev"),
                        has("odev"),
                        has("packed"),
                        val("flags"),
                        val("dict"),
                        val("conv"),
                    );
                    for opt in &f.opts {
                        let key = opt.split('=').next().unwrap_or("");
                        if ![
                            "hex", "ipadd", "dev", "odev", "packed", "flags", "dict", "conv",
                        ]
                        .contains(&key)
                        {
                            return Err(format!(
                                "message {name}: field {}: unknown option {opt}",
                                f.name
                            ));
                        }
                    }
                }
                o.push_str("] };\n\n");
            }
        }
    }
    o.push_str("/// Every message descriptor of the schema, in schema order.\npub static ALL_MESSAGES: &[&MessageDesc] = &[\n");
    for item in items {
        if let Item::Msg { name, .. } = item {
            let _ = writeln!(o, "    &{},", upper(name));
        }
    }
    o.push_str("];\n");
    Ok(o)
}

fn main() {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let schema = manifest.join("schema/criu.schema");
    println!("cargo:rerun-if-changed={}", schema.display());
    let text = std::fs::read_to_string(&schema)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", schema.display()));
    let items = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let code = generate(&items).unwrap_or_else(|e| panic!("schema: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("schema_gen.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
