//! Static descriptors of the image messages: what crit needs to print and parse any image
//! generically (field names, numbers, wire types, labels and CRIU's printing annotations).
//!
//! The descriptors are generated next to the prost structs in [`crate::pb`] from the same schema,
//! so the two cannot disagree.

/// How a field repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// Always present on the wire.
    Required,
    /// Present or absent (presence is kept and printed only when present).
    Optional,
    /// Zero or more values (unpacked unless [`FieldOpts::packed`]).
    Repeated,
}

/// The protobuf type of a field.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// `uint32` (varint).
    U32,
    /// `uint64` (varint).
    U64,
    /// `int32` (varint, negative values sign-extended to 64 bits).
    I32,
    /// `int64` (varint).
    I64,
    /// `sint32` (zigzag varint).
    S32,
    /// `sint64` (zigzag varint).
    S64,
    /// `bool` (varint).
    Bool,
    /// `string` (length-delimited UTF-8).
    Str,
    /// `bytes` (length-delimited).
    Bytes,
    /// `fixed32`.
    Fixed32,
    /// `fixed64`.
    Fixed64,
    /// `sfixed32`.
    Sfixed32,
    /// `sfixed64`.
    Sfixed64,
    /// `float`.
    Float,
    /// `double`.
    Double,
    /// An enum (varint) described by the descriptor.
    Enum(&'static EnumDesc),
    /// A nested message (length-delimited).
    Message(&'static MessageDesc),
}

impl Kind {
    /// The protobuf wire type used for one (unpacked) value of this kind.
    pub fn wire_type(&self) -> u8 {
        match self {
            Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => 1,
            Kind::Str | Kind::Bytes | Kind::Message(_) => 2,
            Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => 5,
            _ => 0,
        }
    }
}

/// CRIU's printing annotations of a field (the `criu` field option of the format).
#[derive(Clone, Copy, Debug, Default)]
pub struct FieldOpts {
    /// Printed as `"0x..."`; on a message field, every integer below it too.
    pub hex: bool,
    /// A repeated `uint32` holding an IP address in network byte order.
    pub ipadd: bool,
    /// A device number printed `"major:minor"` (kernel encoding, 20 minor bits).
    pub dev: bool,
    /// With `dev`: the old (glibc `makedev`) encoding.
    pub odev: bool,
    /// Repeated scalars are packed on the wire.
    pub packed: bool,
    /// Name of the flag table used to print the value (`"mmap.prot"`, ...).
    pub flags: Option<&'static str>,
    /// Name of the value table used to print the value (`"sk"`, `"gen"`).
    pub dict: Option<&'static str>,
    /// Custom bytes conversion (`"unix_name"`).
    pub conv: Option<&'static str>,
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub struct FieldDesc {
    /// Field name as in the format (the JSON key).
    pub name: &'static str,
    /// Field number (the protobuf tag).
    pub number: u32,
    /// Required, optional or repeated.
    pub label: Label,
    /// Value type.
    pub kind: Kind,
    /// Printing annotations.
    pub opts: FieldOpts,
}

/// A message type: its name and its fields sorted by number.
#[derive(Debug)]
pub struct MessageDesc {
    /// Message name as in the format (`"pstree_entry"`).
    pub name: &'static str,
    /// Fields, sorted by field number.
    pub fields: &'static [FieldDesc],
}

impl MessageDesc {
    /// The field with this number.
    pub fn field_by_number(&self, number: u32) -> Option<&'static FieldDesc> {
        self.fields.iter().find(|f| f.number == number)
    }

    /// The field with this name.
    pub fn field_by_name(&self, name: &str) -> Option<&'static FieldDesc> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// An enum type: value names and numbers.
#[derive(Debug)]
pub struct EnumDesc {
    /// Enum name as in the format.
    pub name: &'static str,
    /// `(name, number)` pairs.
    pub values: &'static [(&'static str, i32)],
}

impl EnumDesc {
    /// Name of a value, if the enum has it.
    pub fn name_of(&self, value: i32) -> Option<&'static str> {
        self.values.iter().find(|v| v.1 == value).map(|v| v.0)
    }

    /// Number of a named value.
    pub fn value_of(&self, name: &str) -> Option<i32> {
        self.values.iter().find(|v| v.0 == name).map(|v| v.1)
    }
}

/// A prost message type that knows its descriptor.
pub trait Described: prost::Message + Default {
    /// The descriptor of this message type.
    const DESC: &'static MessageDesc;
}

/// Looks a message descriptor up by its name in the format (`"core_entry"`).
pub fn message_by_name(name: &str) -> Option<&'static MessageDesc> {
    crate::pb::ALL_MESSAGES
        .iter()
        .copied()
        .find(|m| m.name == name)
}
