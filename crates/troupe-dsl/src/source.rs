//! Source files as the checker sees them: the text, its name, and a line index.
//!
//! Every diagnostic must show the file, line and column, and the model keeps a [`Loc`]
//! per task so runtime errors can point back at the playbook. Computing a line from a
//! byte offset by scanning would make checking a 10 000-task playbook quadratic, so each
//! file builds its line-start table once and answers with a binary search.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};

use crate::model::Loc;

/// One file read by a loader (or text handed to a `parse_*_str` function).
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub(crate) path: Arc<PathBuf>,
    pub(crate) text: Arc<str>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub(crate) fn new(path: &Path, text: &str) -> SourceFile {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path: Arc::new(path.to_path_buf()),
            text: Arc::from(text),
            line_starts,
        }
    }

    /// The directory relative paths in this file (includes, roles) are resolved from.
    pub(crate) fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line + 1, column)
    }

    pub(crate) fn loc(&self, span: SourceSpan) -> Loc {
        let (line, column) = self.line_col(span.offset());
        Loc {
            file: self.path.clone(),
            line,
            column,
            span,
        }
    }

    pub(crate) fn named(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(self.path.display().to_string(), self.text.clone()).with_language("kdl")
    }

    /// The text under a span, or "" when the span is out of range.
    pub(crate) fn slice(&self, span: SourceSpan) -> &str {
        self.text
            .get(span.offset()..span.offset() + span.len())
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let f = SourceFile::new(Path::new("x.kdl"), "ab\né x=1\n\nlast");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(2), (1, 3));
        assert_eq!(f.line_col(3), (2, 1));
        // `x` comes after a two-byte character: byte 6, column 3
        assert_eq!(f.line_col(6), (2, 3));
        assert_eq!(f.line_col(10), (3, 1));
        assert_eq!(f.line_col(11), (4, 1));
        assert_eq!(f.line_col(999), (4, 5));
    }
}
