//! Aligned text tables, as every subcommand prints them: columns as wide as their widest cell,
//! two spaces apart, numbers aligned right.

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table with a header row, built row by row and rendered at the end.
#[derive(Debug)]
pub(crate) struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and alignments.
    pub(crate) fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            columns: columns
                .iter()
                .map(|&(name, align)| (name.to_owned(), align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// A table of `label  value` lines, without a header.
    pub(crate) fn pairs() -> Self {
        Table::new(&[("", Align::Left), ("", Align::Left)])
    }

    /// Adds a row: one cell per column (missing cells are empty, extra ones dropped).
    pub(crate) fn row(&mut self, cells: impl IntoIterator<Item = String>) {
        let mut cells: Vec<String> = cells.into_iter().take(self.columns.len()).collect();
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as lines, each ending in a newline and without trailing spaces. The header
    /// row is left out when every header is empty.
    pub(crate) fn render(&self) -> String {
        let has_header = self.columns.iter().any(|(name, _)| !name.is_empty());
        let header: Vec<String> = self.columns.iter().map(|(n, _)| n.clone()).collect();
        let rows: Vec<&Vec<String>> = has_header
            .then_some(&header)
            .into_iter()
            .chain(&self.rows)
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                let pad = widths[c] - cell.chars().count();
                match self.columns[c].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = Table::new(&[("file", Align::Left), ("records", Align::Right)]);
        t.row(["a.seg".to_string(), "7".to_string()]);
        t.row(["bb.snap".to_string(), "1234".to_string()]);
        assert_eq!(
            t.render(),
            "file     records\na.seg          7\nbb.snap     1234\n"
        );
    }

    #[test]
    fn pairs_have_no_header_and_short_rows_are_padded() {
        let mut t = Table::pairs();
        t.row(["records".to_string(), "3".to_string()]);
        t.row(["live".to_string()]);
        assert_eq!(t.render(), "records  3\nlive\n");
    }
}
