//! `wsgi.file_wrapper`: lets an app return a file object and have it sent in blocks. Reading
//! happens in Python's file object, which releases the GIL around each read.

use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(module = "bartizan._bartizan", name = "FileWrapper")]
pub struct FileWrapper {
    filelike: Py<PyAny>,
    blksize: usize,
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize=8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        let data = data.cast_into::<PyBytes>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err("file_wrapper: read() must return bytes")
        })?;
        Ok((!data.as_bytes().is_empty()).then_some(data))
    }

    /// PEP 3333: closing the wrapper closes the file, if it can be closed.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}
