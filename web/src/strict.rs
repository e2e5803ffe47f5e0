//! Strict request input: a deserializer that wraps another (JSON bodies, query strings) and
//!
//! - refuses a sequence wherever a struct is expected, at any depth: serde lets a struct
//!   deserialize from an array (`["Acme", "ops@acme.example.com", …]` fills its fields in
//!   order), but a request must name its fields;
//! - describes what it expects in JSON words ("an object", "an integer from 0 to 65535",
//!   "one of `a`, `b`") instead of Rust types ("struct GroupBody", "u16"), and checks integer
//!   ranges itself so that serde's own "expected u16" never reaches a client.
//!
//! [`client_message`] turns the messages serde builds from these into words for a form.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

/// Wraps a deserializer, and the seeds, accesses and visitors it hands out, so the rules
/// above hold at every depth.
pub struct Strict<T>(pub T);

/// What a value must be, in a client's words.
#[derive(Clone, Copy)]
enum Expect {
    /// The wrapped visitor's own words (for values whose errors never name a type).
    Inner,
    Words(&'static str),
    /// An object: a struct or a map. A struct is refused an array.
    Object,
    Integer {
        min: i128,
        max: i128,
    },
}

/// A visitor that describes its value with [`Expect`] and keeps the deserializers it is
/// handed strict.
struct Guarded<V> {
    inner: V,
    expect: Expect,
}

impl<V> Guarded<V> {
    fn new(inner: V, expect: Expect) -> Self {
        Self { inner, expect }
    }

    fn out_of_range(&self, value: i128) -> bool {
        matches!(self.expect, Expect::Integer { min, max } if !(min..=max).contains(&value))
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Guarded<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        match self.expect {
            Expect::Inner => self.inner.expecting(formatter),
            Expect::Words(words) => formatter.write_str(words),
            Expect::Object => formatter.write_str("an object"),
            Expect::Integer { min, max } => write!(formatter, "an integer from {min} to {max}"),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.inner.visit_bool(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        if self.out_of_range(v.into()) {
            return Err(E::invalid_value(Unexpected::Signed(v), &self));
        }
        self.inner.visit_i64(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if self.out_of_range(v.into()) {
            return Err(E::invalid_value(Unexpected::Unsigned(v), &self));
        }
        self.inner.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if let Expect::Integer { .. } = self.expect {
            return Err(E::invalid_type(Unexpected::Float(v), &self));
        }
        self.inner.visit_f64(v)
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Self::Value, E> {
        self.inner.visit_char(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.inner.visit_string(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        self.inner.visit_bytes(v)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict(deserializer))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if let Expect::Object = self.expect {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        self.inner.visit_seq(Strict(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Strict(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Strict(data))
    }
}

/// `deserialize_*` methods that forward to the wrapped deserializer, describing the value.
macro_rules! forward {
    ($($method:ident => $expect:expr),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.0.$method(Guarded::new(visitor, $expect))
        }
    )*};
}

/// An integer type's range.
macro_rules! integer {
    ($type:ty) => {
        Expect::Integer {
            min: <$type>::MIN as i128,
            max: <$type>::MAX as i128,
        }
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward! {
        deserialize_any => Expect::Inner,
        deserialize_bool => Expect::Words("true or false"),
        deserialize_i8 => integer!(i8),
        deserialize_i16 => integer!(i16),
        deserialize_i32 => integer!(i32),
        deserialize_i64 => integer!(i64),
        deserialize_u8 => integer!(u8),
        deserialize_u16 => integer!(u16),
        deserialize_u32 => integer!(u32),
        deserialize_u64 => integer!(u64),
        deserialize_i128 => Expect::Words("an integer"),
        deserialize_u128 => Expect::Words("an integer"),
        deserialize_f32 => Expect::Words("a number"),
        deserialize_f64 => Expect::Words("a number"),
        deserialize_char => Expect::Words("a single character"),
        deserialize_str => Expect::Words("a string"),
        deserialize_string => Expect::Words("a string"),
        deserialize_bytes => Expect::Words("a string"),
        deserialize_byte_buf => Expect::Words("a string"),
        deserialize_option => Expect::Inner,
        deserialize_unit => Expect::Words("null"),
        deserialize_seq => Expect::Words("an array"),
        deserialize_map => Expect::Object,
        deserialize_identifier => Expect::Words("a field name"),
        deserialize_ignored_any => Expect::Inner,
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Guarded::new(visitor, Expect::Words("null"));
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Guarded::new(visitor, Expect::Inner);
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Guarded::new(visitor, Expect::Words("an array"));
        self.0.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Guarded::new(visitor, Expect::Words("an array"));
        self.0.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Guarded::new(visitor, Expect::Object);
        self.0.deserialize_struct(name, fields, visitor)
    }

    /// Through `deserialize_any`: serde_json calls any value but a string or an object given
    /// for an enum a syntax error ("expected value"), which would answer 400 for valid JSON.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(EnumVisitor {
            inner: visitor,
            variants,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// An enum from a string (a unit variant) or an object (`{"variant": …}`); anything else is
/// refused naming the variants.
struct EnumVisitor<V> {
    inner: V,
    variants: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for EnumVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("one of ")?;
        for (index, name) in self.variants.iter().enumerate() {
            let separator = if index == 0 { "" } else { ", " };
            write!(formatter, "{separator}`{name}`")?;
        }
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.visit_string(v.to_owned())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        let variant = de::value::BorrowedStrDeserializer::<E>::new(v);
        self.inner.visit_enum(Strict(variant))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        let variant = de::value::StringDeserializer::<E>::new(v);
        self.inner.visit_enum(Strict(variant))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let variant = de::value::MapAccessDeserializer::new(Strict(map));
        self.inner.visit_enum(Strict(variant))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Strict<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(deserializer))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Strict(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Strict(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Strict(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Strict<A> {
    type Error = A::Error;
    type Variant = Strict<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Strict(seed))?;
        Ok((value, Strict(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Strict<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Strict(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = Guarded::new(visitor, Expect::Words("an array"));
        self.0.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0
            .struct_variant(fields, Guarded::new(visitor, Expect::Object))
    }
}

/// A serde message (as built from [`Strict`]'s descriptions) in words for a form, and the
/// field it names when that is missing or given twice (serde's path then names its parent).
pub fn client_message(message: &str) -> ClientMessage {
    let backticked = |rest: &str| rest.strip_prefix('`')?.split('`').next().map(str::to_owned);
    let mut named_field = None;
    let text = if let Some(rest) = message.strip_prefix("missing field ") {
        named_field = backticked(rest);
        "is required".to_owned()
    } else if let Some(rest) = message.strip_prefix("duplicate field ") {
        named_field = backticked(rest);
        "is given more than once".to_owned()
    } else if let Some(rest) = message.strip_prefix("unknown field ") {
        match rest.split_once(", expected ") {
            Some((_, known)) => format!("is not a known field; expected {known}"),
            None => "is not a known field".to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        match rest.split_once(", expected ") {
            Some((_, known)) => format!("must be {known}"),
            None => "is not allowed here".to_owned(),
        }
    } else if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        // The expectation is ours and never holds ", expected "; the value may.
        match rest.rsplit_once(", expected ") {
            Some((given, expected)) => format!("must be {expected}, not {}", json_words(given)),
            None => message.to_owned(),
        }
    } else if let Some(rest) = message.strip_prefix("invalid length ") {
        match rest.split_once(", expected ") {
            Some((_, expected)) => format!("must be {expected}"),
            None => message.to_owned(),
        }
    } else if INTEGER_PARSE_ERRORS.contains(&message) {
        // Query strings carry numbers as text; Rust's parse error says what went wrong.
        "must be an integer".to_owned()
    } else if RANGE_PARSE_ERRORS.contains(&message) {
        "is out of range".to_owned()
    } else {
        message.to_owned()
    };
    ClientMessage { text, named_field }
}

/// `ParseIntError`'s messages, as query strings give them.
const INTEGER_PARSE_ERRORS: &[&str] = &[
    "invalid digit found in string",
    "cannot parse integer from empty string",
];
const RANGE_PARSE_ERRORS: &[&str] = &[
    "number too large to fit in target type",
    "number too small to fit in target type",
];

pub struct ClientMessage {
    pub text: String,
    /// The field a message about a missing or repeated field names.
    pub named_field: Option<String>,
}

/// serde's name for a value that came in, as JSON calls it.
fn json_words(given: &str) -> String {
    let unquoted = |rest: &str| rest.trim_matches('`').to_owned();
    match given {
        "sequence" => "an array".to_owned(),
        "map" => "an object".to_owned(),
        "null" | "unit value" => "null".to_owned(),
        _ => {
            if let Some(rest) = given.strip_prefix("string ") {
                rest.to_owned()
            } else if let Some(rest) = given
                .strip_prefix("integer ")
                .or_else(|| given.strip_prefix("floating point "))
                .or_else(|| given.strip_prefix("boolean "))
            {
                unquoted(rest)
            } else {
                given.to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        port: Option<u16>,
        inner: Option<Inner>,
        items: Option<Vec<Inner>>,
        labels: Option<BTreeMap<String, Inner>>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        value: i64,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Test,
        Live,
    }

    /// The message and the path of the first error, or `None` when `json` parses.
    fn error(json: &str) -> Option<(String, String)> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let error =
            serde_path_to_error::deserialize::<_, Outer>(Strict(&mut deserializer)).err()?;
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(before, _)| before);
        Some((path, client_message(message).text))
    }

    #[test]
    fn objects_parse_and_arrays_never_stand_in_for_them() {
        let valid = r#"{"name": "a", "port": 25, "inner": {"value": 1},
                        "items": [{"value": 2}], "labels": {"x": {"value": 3}}, "mode": "live"}"#;
        assert_eq!(error(valid), None);
        for (json, path) in [
            (r#"["a", 25]"#, "."),
            (r#"{"name": "a", "inner": [1]}"#, "inner"),
            (r#"{"name": "a", "items": [[1]]}"#, "items[0]"),
            (r#"{"name": "a", "labels": {"x": [3]}}"#, "labels.x"),
        ] {
            assert_eq!(
                error(json),
                Some((
                    path.to_owned(),
                    "must be an object, not an array".to_owned()
                )),
                "{json}"
            );
        }
    }

    #[test]
    fn messages_speak_json_not_rust() {
        for (json, expected) in [
            (r#"{"name": 5}"#, "must be a string, not 5"),
            (r#"{"name": null}"#, "must be a string, not null"),
            (r#"{"name": {}}"#, "must be a string, not an object"),
            (
                r#"{"name": "a", "port": "x"}"#,
                r#"must be an integer from 0 to 65535, not "x""#,
            ),
            (
                r#"{"name": "a", "port": 70000}"#,
                "must be an integer from 0 to 65535, not 70000",
            ),
            (
                r#"{"name": "a", "port": -1}"#,
                "must be an integer from 0 to 65535, not -1",
            ),
            (
                r#"{"name": "a", "port": 2.5}"#,
                "must be an integer from 0 to 65535, not 2.5",
            ),
            (
                r#"{"name": "a", "inner": {"value": true}}"#,
                "must be an integer from -9223372036854775808 to 9223372036854775807, not true",
            ),
            (
                r#"{"name": "a", "items": {}}"#,
                "must be an array, not an object",
            ),
            (r#"{"name": "a", "mode": "x"}"#, "must be `test` or `live`"),
            (
                r#"{"name": "a", "mode": 1}"#,
                "must be one of `test`, `live`, not 1",
            ),
            (r#"{"port": 1}"#, "is required"),
            (
                r#"{"name": "a", "extra": 1}"#,
                "is not a known field; expected one of `name`, `port`, `inner`, `items`, `labels`, `mode`",
            ),
            (r#"{"name": "a", "name": "b"}"#, "is given more than once"),
            ("[]", "must be an object, not an array"),
            ("5", "must be an object, not 5"),
        ] {
            let (_, message) = error(json).unwrap_or_else(|| panic!("{json} parsed"));
            assert_eq!(message, expected, "{json}");
            for rust in [
                "struct", "enum", "u16", "i64", "sequence", "map", "Outer", "Option",
            ] {
                assert!(!message.contains(rust), "{json}: {message}");
            }
        }
    }
}
