//! Result rows to and from a Polars DataFrame, parquet and csv.
//!
//! The columns follow [`ResultRow`]'s fields in declaration order, read from
//! its serde derive, so a field added to the row becomes a column without a
//! change here. Column types come from the values; a column that is null in
//! every row gets the type of [`null_column_type`].

use crate::error::{Error, Result};
use crate::experiment::ResultRow;
use polars::prelude::*;
use polars_io::prelude::{CsvWriter, ParquetReader, ParquetWriter, SerReader, SerWriter};
use serde_json::Value;
use std::path::Path;

fn pe(what: &str, e: PolarsError) -> Error {
    Error::invalid(format!("{what}: {e}"))
}

/// The field names of a struct in declaration order, read from its
/// `Deserialize` impl (serde passes them to `deserialize_struct`).
pub(crate) fn struct_fields<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut p = Probe(None);
    let _ = T::deserialize(&mut p);
    p.0.unwrap_or(&[])
}

/// The type of a column whose every value is null.
fn null_column_type(name: &str) -> DataType {
    match name {
        "compressed_bytes" | "peak_mem_bytes" | "original_bytes" | "numel" => DataType::UInt64,
        "bound_held" | "verified" | "lossless" | "available" | "derived" => DataType::Boolean,
        _ => DataType::Float64,
    }
}

/// The type of a column from the value a default row has in it.
fn default_column_type(v: &Value) -> Option<DataType> {
    Some(match v {
        Value::Bool(_) => DataType::Boolean,
        Value::String(_) => DataType::String,
        Value::Number(n) if n.is_u64() => DataType::UInt64,
        Value::Number(n) if n.is_i64() => DataType::Int64,
        Value::Number(_) => DataType::Float64,
        _ => return None,
    })
}

fn column_from_values(field: &str, vals: &[&Value], default: &Value) -> Result<Column> {
    let first = vals.iter().find(|v| !v.is_null());
    let name = PlSmallStr::from(field);
    let col = match first {
        None => Column::full_null(
            name,
            vals.len(),
            &default_column_type(default).unwrap_or_else(|| null_column_type(field)),
        ),
        Some(Value::Bool(_)) => Column::new(name, vals.iter().map(|v| v.as_bool()).collect::<Vec<_>>()),
        Some(Value::String(_)) => Column::new(name, vals.iter().map(|v| v.as_str()).collect::<Vec<Option<&str>>>()),
        Some(Value::Number(_)) => {
            if vals.iter().all(|v| v.is_null() || v.is_u64()) {
                Column::new(name, vals.iter().map(|v| v.as_u64()).collect::<Vec<_>>())
            } else if vals.iter().all(|v| v.is_null() || v.is_i64() || v.is_u64()) {
                Column::new(name, vals.iter().map(|v| v.as_i64()).collect::<Vec<_>>())
            } else {
                Column::new(name, vals.iter().map(|v| v.as_f64()).collect::<Vec<_>>())
            }
        }
        Some(other) => {
            return Err(Error::unsupported(format!("column {field}: nested value {other} is not a table cell")));
        }
    };
    Ok(col)
}

/// One column per [`ResultRow`] field, one row per cell.
pub fn rows_to_frame(rows: &[ResultRow]) -> Result<DataFrame> {
    let fields = struct_fields::<ResultRow>();
    let values: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::to_value(r).map_err(|e| Error::invalid(format!("result row: {e}"))))
        .collect::<Result<_>>()?;
    let null = Value::Null;
    let defaults = serde_json::to_value(ResultRow::default()).unwrap_or(Value::Null);
    let mut cols = Vec::with_capacity(fields.len());
    for f in fields {
        let vals: Vec<&Value> = values.iter().map(|v| v.get(*f).unwrap_or(&null)).collect();
        cols.push(column_from_values(f, &vals, defaults.get(*f).unwrap_or(&null))?);
    }
    DataFrame::new(rows.len(), cols).map_err(|e| pe("building the results table", e))
}

fn any_to_json(v: AnyValue) -> Value {
    match v {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::UInt8(x) => x.into(),
        AnyValue::UInt16(x) => x.into(),
        AnyValue::UInt32(x) => x.into(),
        AnyValue::UInt64(x) => x.into(),
        AnyValue::Int8(x) => x.into(),
        AnyValue::Int16(x) => x.into(),
        AnyValue::Int32(x) => x.into(),
        AnyValue::Int64(x) => x.into(),
        AnyValue::Float32(x) => serde_json::Number::from_f64(x as f64).map_or(Value::Null, Value::Number),
        AnyValue::Float64(x) => serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number),
        other => Value::String(other.to_string()),
    }
}

/// Rows back from a frame written by [`rows_to_frame`].
pub fn frame_to_rows(df: &DataFrame) -> Result<Vec<ResultRow>> {
    let cols = df.columns();
    (0..df.height())
        .map(|i| {
            let mut m = serde_json::Map::new();
            for c in cols {
                let v = c.get(i).map_err(|e| pe("reading the results table", e))?;
                m.insert(c.name().to_string(), any_to_json(v));
            }
            serde_json::from_value(Value::Object(m)).map_err(|e| Error::invalid(format!("results table, row {i}: {e}")))
        })
        .collect()
}

pub fn write_parquet(path: &Path, df: &mut DataFrame) -> Result<()> {
    crate::io::write_atomic_with(path, |w| {
        ParquetWriter::new(w).finish(df).map(|_| ()).map_err(|e| pe(&path.display().to_string(), e))
    })
}

pub fn write_csv(path: &Path, df: &mut DataFrame) -> Result<()> {
    crate::io::write_atomic_with(path, |w| {
        CsvWriter::new(w).include_header(true).finish(df).map_err(|e| pe(&path.display().to_string(), e))
    })
}

/// Read the rows of a `results.parquet`.
pub fn read_rows(path: &Path) -> Result<Vec<ResultRow>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let df = ParquetReader::new(f).finish().map_err(|e| pe(&path.display().to_string(), e))?;
    frame_to_rows(&df)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_order_comes_from_the_struct() {
        let f = struct_fields::<ResultRow>();
        assert_eq!(f.first(), Some(&"experiment"));
        assert!(f.contains(&"decompress_mbps_median"));
        assert_eq!(f.len(), serde_json::to_value(ResultRow::default()).unwrap().as_object().unwrap().len());
    }

    #[test]
    fn frame_round_trip() {
        let rows = vec![
            ResultRow {
                codec: "zstd:level=3".into(),
                compressed_bytes: Some(7),
                ratio: Some(0.7),
                original_bytes: 10,
                available: true,
                ..Default::default()
            },
            ResultRow { codec: "peer:zipnn".into(), note: "not installed".into(), ..Default::default() },
        ];
        let df = rows_to_frame(&rows).unwrap();
        assert_eq!(df.height(), 2);
        assert_eq!(df.width(), struct_fields::<ResultRow>().len());
        assert_eq!(df.column("compressed_bytes").unwrap().dtype(), &DataType::UInt64);
        assert_eq!(df.column("ratio").unwrap().dtype(), &DataType::Float64);
        // max_rel_err is null everywhere: typed by the fallback
        assert_eq!(df.column("max_rel_err").unwrap().dtype(), &DataType::Float64);
        assert_eq!(frame_to_rows(&df).unwrap(), rows);
        // no rows at all: the columns still have their types
        let empty = rows_to_frame(&[]).unwrap();
        assert_eq!(empty.height(), 0);
        assert_eq!(empty.column("tensor").unwrap().dtype(), &DataType::String);
        assert_eq!(empty.column("numel").unwrap().dtype(), &DataType::UInt64);
        assert_eq!(empty.column("verified").unwrap().dtype(), &DataType::Boolean);
    }
}
