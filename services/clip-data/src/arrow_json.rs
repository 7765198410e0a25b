//! Arrow <-> JSON, in one place: cells of any Arrow column as JSON values (the parquet dataset reader, the row
//! store, `read_rows`), and JSON values into the narrowest Arrow column that holds them all, as pandas would type a
//! column (the metadata writer, `filter`'s results.parquet).

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{self as t, DataType};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Whether cells of this type map to a JSON scalar (string, bool, number) rather than to display text.
pub fn is_scalar(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Utf8 | LargeUtf8
            | Utf8View
            | Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
    )
}

/// A string cell (`Utf8`, `LargeUtf8`, `Utf8View`); `None` for nulls and other types.
pub fn cell_string(col: &dyn Array, row: usize) -> Option<String> {
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Utf8 => Some(col.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Some(col.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Some(col.as_string_view().value(row).to_string()),
        _ => None,
    }
}

/// A bytes cell (`Binary`, `LargeBinary`, `BinaryView`, or the `bytes` field of a Hugging Face image struct).
pub fn cell_bytes(col: &dyn Array, row: usize) -> Option<Vec<u8>> {
    if col.is_null(row) {
        return None;
    }
    match col.data_type() {
        DataType::Binary => Some(col.as_binary::<i32>().value(row).to_vec()),
        DataType::LargeBinary => Some(col.as_binary::<i64>().value(row).to_vec()),
        DataType::BinaryView => Some(col.as_binary_view().value(row).to_vec()),
        // Hugging Face datasets store images as struct<bytes: binary, path: string>.
        DataType::Struct(_) => col.as_struct().column_by_name("bytes").and_then(|c| cell_bytes(c.as_ref(), row)),
        _ => None,
    }
}

/// The byte length of a string or bytes cell (the `bytes` field of an image struct), without copying it.
pub fn cell_len(col: &dyn Array, row: usize) -> Option<u64> {
    if col.is_null(row) {
        return None;
    }
    let n = match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(row).len(),
        DataType::LargeUtf8 => col.as_string::<i64>().value(row).len(),
        DataType::Utf8View => col.as_string_view().value(row).len(),
        DataType::Binary => col.as_binary::<i32>().value(row).len(),
        DataType::LargeBinary => col.as_binary::<i64>().value(row).len(),
        DataType::BinaryView => col.as_binary_view().value(row).len(),
        DataType::Struct(_) => return col.as_struct().column_by_name("bytes").and_then(|c| cell_len(c.as_ref(), row)),
        _ => return None,
    };
    Some(n as u64)
}

/// One cell as JSON: `None` for a null; scalars typed; any other type as its display text.
pub fn cell_json(col: &dyn Array, row: usize) -> Option<Value> {
    if col.is_null(row) {
        return None;
    }
    if let Some(s) = cell_string(col, row) {
        return Some(Value::String(s));
    }
    Some(match col.data_type() {
        DataType::Boolean => Value::Bool(col.as_boolean().value(row)),
        DataType::Int8 => col.as_primitive::<t::Int8Type>().value(row).into(),
        DataType::Int16 => col.as_primitive::<t::Int16Type>().value(row).into(),
        DataType::Int32 => col.as_primitive::<t::Int32Type>().value(row).into(),
        DataType::Int64 => col.as_primitive::<t::Int64Type>().value(row).into(),
        DataType::UInt8 => col.as_primitive::<t::UInt8Type>().value(row).into(),
        DataType::UInt16 => col.as_primitive::<t::UInt16Type>().value(row).into(),
        DataType::UInt32 => col.as_primitive::<t::UInt32Type>().value(row).into(),
        DataType::UInt64 => col.as_primitive::<t::UInt64Type>().value(row).into(),
        DataType::Float32 => (col.as_primitive::<t::Float32Type>().value(row) as f64).into(),
        DataType::Float64 => col.as_primitive::<t::Float64Type>().value(row).into(),
        _ => arrow::util::display::ArrayFormatter::try_new(col, &Default::default())
            .map(|f| Value::from(f.value(row).to_string()))
            .unwrap_or(Value::Null),
    })
}

/// One row as a JSON object, nulls left out; `columns` keeps only those names.
pub fn row_json(batch: &RecordBatch, row: usize, columns: Option<&[String]>) -> Map<String, Value> {
    let mut map = Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if columns.is_some_and(|c| !c.iter().any(|n| n == field.name())) {
            continue;
        }
        if let Some(v) = cell_json(column.as_ref(), row) {
            map.insert(field.name().clone(), v);
        }
    }
    map
}

/// The narrowest column holding every value, as pandas would type it: Boolean, Int64, Float64, else Utf8 (strings
/// verbatim, other JSON as its text). `None` and JSON null are nulls.
pub fn json_column(values: &[Option<&Value>]) -> (DataType, ArrayRef) {
    let values: Vec<Option<&Value>> = values.iter().map(|v| v.filter(|v| !v.is_null())).collect();
    let present = || values.iter().flatten();
    let any = present().next().is_some();
    if any && present().all(|v| v.is_boolean()) {
        let mut b = BooleanBuilder::new();
        values.iter().for_each(|v| b.append_option(v.and_then(Value::as_bool)));
        return (DataType::Boolean, Arc::new(b.finish()));
    }
    if any && present().all(|v| v.is_i64()) {
        let mut b = Int64Builder::new();
        values.iter().for_each(|v| b.append_option(v.and_then(Value::as_i64)));
        return (DataType::Int64, Arc::new(b.finish()));
    }
    if any && present().all(|v| v.is_number()) {
        let mut b = Float64Builder::new();
        values.iter().for_each(|v| b.append_option(v.and_then(Value::as_f64)));
        return (DataType::Float64, Arc::new(b.finish()));
    }
    let mut b = StringBuilder::new();
    for v in &values {
        b.append_option(v.map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }));
    }
    (DataType::Utf8, Arc::new(b.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int32Array, ListArray, StringArray, UInt64Array};
    use arrow::datatypes::{Field, Int32Type, Schema};
    use serde_json::json;

    #[test]
    fn columns_take_the_narrowest_type_holding_every_value() {
        let (t, f, i, x, s, o) = (json!(true), json!(2.5), json!(1), json!(u64::MAX), json!("x"), json!({"a": 1}));
        assert_eq!(json_column(&[Some(&t), None]).0, DataType::Boolean);
        assert_eq!(json_column(&[Some(&i), None, Some(&Value::Null)]).0, DataType::Int64);
        assert_eq!(json_column(&[Some(&i), Some(&f)]).0, DataType::Float64);
        assert_eq!(json_column(&[Some(&i), Some(&x)]).0, DataType::Float64, "u64 beyond i64 is a float, as in pandas");
        assert_eq!(json_column(&[Some(&i), Some(&t)]).0, DataType::Utf8);
        assert_eq!(json_column(&[None, None]).0, DataType::Utf8, "an all-null column is text");
        let (_, text) = json_column(&[Some(&s), Some(&o), None]);
        let text = text.as_string::<i32>();
        assert_eq!((text.value(0), text.value(1), text.is_null(2)), ("x", r#"{"a":1}"#, true));
    }

    #[test]
    fn cells_round_trip_through_json_columns() {
        let values = [json!(3), json!(-7)];
        let (_, ints) = json_column(&values.iter().map(Some).collect::<Vec<_>>());
        assert_eq!(cell_json(ints.as_ref(), 1), Some(json!(-7)));
        let floats = Float32Array::from(vec![0.5f32]);
        assert_eq!(cell_json(&floats, 0), Some(json!(0.5)));
        assert_eq!(cell_json(&UInt64Array::from(vec![u64::MAX]), 0), Some(json!(u64::MAX)));
        assert_eq!(cell_json(&Int32Array::from(vec![None::<i32>]), 0), None);
    }

    #[test]
    fn other_types_are_display_text_and_rows_leave_nulls_and_unasked_columns_out() {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1), Some(2)])]);
        assert!(!is_scalar(list.data_type()));
        assert_eq!(cell_json(&list, 0), Some(json!("[1, 2]")));
        let schema = Schema::new(vec![Field::new("a", DataType::Utf8, true), Field::new("b", DataType::Int32, true)]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(StringArray::from(vec![Some("x"), None])), Arc::new(Int32Array::from(vec![1, 2]))],
        )
        .unwrap();
        assert_eq!(Value::Object(row_json(&batch, 1, None)), json!({"b": 2}));
        assert_eq!(Value::Object(row_json(&batch, 0, Some(&["a".to_string()]))), json!({"a": "x"}));
    }
}
