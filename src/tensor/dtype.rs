//! The dtypes safetensors defines, their sizes, stable archive ids and float
//! field layouts.

use crate::error::{Error, Result};
use std::fmt;

/// Every dtype the safetensors format defines (as of safetensors 0.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
    F8E4M3,
    F8E5M2,
    F8E8M0,
    F6E2M3,
    F6E3M2,
    F4,
    C64,
}

/// Sign / exponent / mantissa widths of a binary float format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatLayout {
    pub sign_bits: u32,
    pub exp_bits: u32,
    pub mant_bits: u32,
}

impl FloatLayout {
    pub const fn bits(&self) -> u32 {
        self.sign_bits + self.exp_bits + self.mant_bits
    }
}

impl DType {
    pub const ALL: [DType; 20] = [
        DType::Bool,
        DType::U8,
        DType::I8,
        DType::I16,
        DType::U16,
        DType::F16,
        DType::BF16,
        DType::I32,
        DType::U32,
        DType::F32,
        DType::F64,
        DType::I64,
        DType::U64,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::F8E8M0,
        DType::F6E2M3,
        DType::F6E3M2,
        DType::F4,
        DType::C64,
    ];

    /// The name used in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E8M0 => "F8_E8M0",
            DType::F6E2M3 => "F6_E2M3",
            DType::F6E3M2 => "F6_E3M2",
            DType::F4 => "F4",
            DType::C64 => "C64",
        }
    }

    pub fn from_name(name: &str) -> Result<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.name() == name)
            .ok_or_else(|| Error::unsupported(format!("unknown dtype '{name}'")))
    }

    /// Size of one element in bits (4 and 6 for the sub-byte float types).
    pub fn bits(self) -> u32 {
        match self {
            DType::F4 => 4,
            DType::F6E2M3 | DType::F6E3M2 => 6,
            DType::Bool | DType::U8 | DType::I8 => 8,
            DType::F8E4M3 | DType::F8E5M2 | DType::F8E8M0 => 8,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::U32 | DType::F32 => 32,
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 64,
        }
    }

    /// Size of one element in whole bytes; `None` for sub-byte types, which
    /// are handled as opaque packed bytes.
    pub fn size(self) -> Option<usize> {
        let b = self.bits();
        b.is_multiple_of(8).then_some((b / 8) as usize)
    }

    /// The granularity in bytes at which a tensor of this dtype may be split
    /// into chunks without cutting an element (sub-byte types: 1 byte for F4,
    /// 3 bytes = 4 elements for F6).
    pub fn split_unit(self) -> usize {
        match self {
            DType::F6E2M3 | DType::F6E3M2 => 3,
            DType::F4 => 1,
            d => d.size().unwrap_or(1),
        }
    }

    /// Stable id used in the archive. Never reuse or renumber.
    pub fn id(self) -> u8 {
        match self {
            DType::Bool => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::I16 => 4,
            DType::U16 => 5,
            DType::F16 => 6,
            DType::BF16 => 7,
            DType::I32 => 8,
            DType::U32 => 9,
            DType::F32 => 10,
            DType::F64 => 11,
            DType::I64 => 12,
            DType::U64 => 13,
            DType::F8E4M3 => 14,
            DType::F8E5M2 => 15,
            DType::F8E8M0 => 16,
            DType::F6E2M3 => 17,
            DType::F6E3M2 => 18,
            DType::F4 => 19,
            DType::C64 => 20,
        }
    }

    pub fn from_id(id: u8) -> Result<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.id() == id)
            .ok_or_else(|| Error::unsupported(format!("unknown dtype id {id}")))
    }

    /// Sign / exponent / mantissa layout for float dtypes.
    pub fn float_layout(self) -> Option<FloatLayout> {
        let (s, e, m) = match self {
            DType::F16 => (1, 5, 10),
            DType::BF16 => (1, 8, 7),
            DType::F32 => (1, 8, 23),
            DType::F64 => (1, 11, 52),
            DType::F8E4M3 => (1, 4, 3),
            DType::F8E5M2 => (1, 5, 2),
            DType::F8E8M0 => (0, 8, 0),
            DType::F6E2M3 => (1, 2, 3),
            DType::F6E3M2 => (1, 3, 2),
            DType::F4 => (1, 2, 1),
            _ => return None,
        };
        Some(FloatLayout { sign_bits: s, exp_bits: e, mant_bits: m })
    }

    pub fn is_float(self) -> bool {
        self.float_layout().is_some()
    }

    /// Byte count of `numel` elements, or an error if it overflows or does not
    /// fill whole bytes.
    pub fn byte_len(self, numel: u64) -> Result<u64> {
        let bits = numel
            .checked_mul(self.bits() as u64)
            .ok_or_else(|| Error::invalid(format!("{numel} elements of {self} overflow")))?;
        if bits % 8 != 0 {
            return Err(Error::invalid(format!("{numel} elements of {self} do not fill whole bytes ({bits} bits)")));
        }
        Ok(bits / 8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = Error;
    fn from_str(s: &str) -> Result<DType> {
        DType::from_name(s)
    }
}

/// Number of elements of a shape, checked for overflow.
pub fn numel(shape: &[u64]) -> Result<u64> {
    shape.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul(d).ok_or_else(|| Error::invalid(format!("shape {shape:?} overflows")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_round_trip_and_are_unique() {
        let mut ids = std::collections::HashSet::new();
        for d in DType::ALL {
            assert_eq!(DType::from_name(d.name()).unwrap(), d);
            assert_eq!(DType::from_id(d.id()).unwrap(), d);
            assert!(ids.insert(d.id()), "duplicate id for {d}");
        }
        assert!(DType::from_name("F12").is_err());
        assert!(DType::from_id(0).is_err());
    }

    #[test]
    fn byte_lengths() {
        assert_eq!(DType::BF16.byte_len(3).unwrap(), 6);
        assert_eq!(DType::F4.byte_len(4).unwrap(), 2);
        assert!(DType::F4.byte_len(3).is_err());
        assert_eq!(DType::F6E2M3.byte_len(4).unwrap(), 3);
        assert!(DType::F64.byte_len(u64::MAX).is_err());
        assert_eq!(numel(&[]).unwrap(), 1);
        assert_eq!(numel(&[2, 0, 5]).unwrap(), 0);
        assert!(numel(&[u64::MAX, 2]).is_err());
    }
}
