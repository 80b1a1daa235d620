// Command funclen lists the non-test Go functions longer than a limit
// whose doc comment does not say why ("Long because ..."), and exits 1
// when there are any: `make lint-funclen`. Its arguments are files and
// directories (walked); none is the current directory.
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	limit := flag.Int("n", 80, "most lines a function may have without a stated reason")
	all := flag.Bool("all", false, "list the long functions that state a reason too")
	flag.Parse()
	roots := flag.Args()
	if len(roots) == 0 {
		roots = []string{"."}
	}
	fset := token.NewFileSet()
	long, unexplained := 0, 0
	check := func(p string) error {
		f, err := parser.ParseFile(fset, p, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			start := fset.Position(fd.Pos())
			lines := fset.Position(fd.End()).Line - start.Line + 1
			if lines <= *limit {
				continue
			}
			long++
			explained := fd.Doc != nil && strings.Contains(fd.Doc.Text(), "Long because")
			if !explained {
				unexplained++
			}
			if !explained || *all {
				fmt.Printf("%s:%d: %s is %d lines%s\n", p, start.Line, fd.Name.Name, lines,
					map[bool]string{true: "", false: `, and its comment does not say why ("Long because ...")`}[explained])
			}
		}
		return nil
	}
	var err error
	for _, root := range roots {
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if n := d.Name(); p != root && (n == "testdata" || n == "vendor" || strings.HasPrefix(n, ".")) {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			return check(p)
		})
		if err != nil {
			break
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "funclen:", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "funclen: %d functions over %d lines, %d without a stated reason\n", long, *limit, unexplained)
	if unexplained > 0 {
		os.Exit(1)
	}
}
