//! owned by another branch
