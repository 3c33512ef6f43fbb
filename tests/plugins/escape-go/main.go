// A plugin that tries to reach past its sandbox: each record names what to try (`do`), and is
// kept when the attempt sees what weir grants (nothing), failed with the error otherwise.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"weir"
)

func attempt(what string) (bool, error) {
	switch what {
	case "open":
		_, err := os.ReadFile("/etc/hostname")
		return false, err
	case "write":
		return false, os.WriteFile("/tmp/escape-go", []byte("out"), 0o644)
	case "listdir":
		_, err := os.ReadDir("/")
		return false, err
	case "socket":
		return false, fmt.Errorf("socket needs an address: `socket HOST:PORT`")
	case "clock":
		return time.Now().Unix() == 0, nil
	case "sleep":
		before := time.Now()
		time.Sleep(time.Hour)
		return time.Since(before) == 0, nil
	case "environment":
		return len(os.Environ()) == 0, nil
	case "print":
		fmt.Println("printed from a plugin")
		fmt.Fprintln(os.Stderr, "and to stderr")
		fmt.Println(strings.Repeat("x", 10000))
		return true, nil
	}
	if addr, ok := strings.CutPrefix(what, "socket "); ok {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return false, err
	}
	return false, fmt.Errorf("unknown attempt %s", what)
}

func init() {
	weir.Filter(func(r *weir.Record) (bool, error) {
		doc, err := r.JSON()
		if err != nil {
			return false, err
		}
		what, _ := doc.(*weir.Object).Get("do")
		return attempt(what.(string))
	})
}

func main() {}
