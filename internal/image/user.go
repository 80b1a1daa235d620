package image

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ResolveUser turns a user as `docker run -u` takes it (name or uid,
// optionally :group as name or gid) into the numeric uid:gid the runtime
// wants, reading names from /etc/passwd and /etc/group in the image's
// layer directories (top first). A user named by number without a group
// gets the group its passwd entry gives, or its own number.
func ResolveUser(lowerDirs []string, user string) (string, error) {
	if user == "" {
		return "", nil
	}
	name, group, hasGroup := strings.Cut(user, ":")
	passwd := readDB(lowerDirs, "etc/passwd")
	var uid, gid string
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		uid, gid = name, name
		for _, f := range passwd {
			if len(f) > 3 && f[2] == name {
				gid = f[3]
				break
			}
		}
	} else {
		for _, f := range passwd {
			if len(f) > 3 && f[0] == name {
				uid, gid = f[2], f[3]
				break
			}
		}
		if uid == "" {
			return "", fmt.Errorf("user %q: no such user in the image's /etc/passwd", name)
		}
	}
	if hasGroup {
		if _, err := strconv.ParseUint(group, 10, 32); err == nil {
			gid = group
		} else {
			gid = ""
			for _, f := range readDB(lowerDirs, "etc/group") {
				if len(f) > 2 && f[0] == group {
					gid = f[2]
					break
				}
			}
			if gid == "" {
				return "", fmt.Errorf("group %q: no such group in the image's /etc/group", group)
			}
		}
	}
	for _, n := range []string{uid, gid} {
		if _, err := strconv.ParseUint(n, 10, 32); err != nil {
			return "", fmt.Errorf("user %q: the image's database gives %q, not a number", user, n)
		}
	}
	return uid + ":" + gid, nil
}

// readDB reads a colon-separated database (passwd, group) from the top
// layer that has it. Only a regular file counts: a symbolic link could
// point out of the image, into the host's own files.
func readDB(lowerDirs []string, rel string) [][]string {
	for _, dir := range lowerDirs {
		p := filepath.Join(dir, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		var out [][]string
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			out = append(out, strings.Split(line, ":"))
		}
		return out
	}
	return nil
}
