// Command wxappliance runs the server side of a WeChat Official Account:
// web login, the central access_token, JS-SDK signatures, media, the message
// callback and a JSON-RPC API for backends, from one binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := &Main{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
	err := m.Run(ctx, os.Args[1:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		// -h on a command printed its flags: what was asked for.
	default:
		fmt.Fprintln(os.Stderr, "wxappliance:", err)
		os.Exit(1)
	}
}

// Main is the command line, separate from os so tests can run it.
type Main struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Started is called with the listening address once serve (or
	// sandbox) is ready.
	Started func(addr string)
}

const usage = `wxappliance runs the server side of a WeChat Official Account.

usage: wxappliance [command] [flags]

commands:
  serve          run the appliance (the default)
  check-config   validate a config file and exit
  version        print the version
  backup         write a backup of the data directory (-o FILE), online if it is running
  restore        restore a backup (-i FILE) into an empty data directory
  menu           show, apply or delete the custom menu of the config
  migrate        copy a Badger data directory (-from DIR) into the config's Redis
  sandbox        serve the fake WeChat alone (-listen ADDR), for several appliances to share
  help           print this help (also -h, --help)

Run "wxappliance <command> -h" for a command's flags. Without a command,
flags go to serve: "wxappliance -config FILE" runs the appliance.
`

// Run executes the command named by args[0] (serve when absent or a flag).
func (m *Main) Run(ctx context.Context, args []string) error {
	cmd := "serve"
	switch {
	case len(args) == 0:
	case args[0] == "-h", args[0] == "-help", args[0] == "--help":
		cmd = "help"
	case args[0] == "-version", args[0] == "--version":
		cmd = "version"
	case !strings.HasPrefix(args[0], "-"):
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return m.serve(ctx, args)
	case "check-config":
		return m.checkConfig(args)
	case "version":
		fmt.Fprintln(m.Stdout, "wxappliance", Version())
		return nil
	case "backup":
		return m.backup(ctx, args)
	case "restore":
		return m.restore(args)
	case "menu":
		return m.menu(ctx, args)
	case "migrate":
		return m.migrate(ctx, args)
	case "sandbox":
		return m.sandbox(ctx, args)
	case "help":
		fmt.Fprint(m.Stdout, usage)
		return nil
	default:
		fmt.Fprint(m.Stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func (m *Main) flags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	path := fs.String("config", "config.toml", "path to the TOML config file")
	return fs, path
}

// Version is the build's version: from -ldflags, else the module version
// recorded by the go command, else "devel".
func Version() string {
	if version != "" {
		return version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}
