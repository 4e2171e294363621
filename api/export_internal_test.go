package api

// SetMaxImportBytes lowers the import body bound for a test and returns
// the undo.
func SetMaxImportBytes(n int64) func() {
	old := maxImportBytes
	maxImportBytes = n
	return func() { maxImportBytes = old }
}
