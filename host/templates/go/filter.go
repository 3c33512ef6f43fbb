// Keep orders above a configured amount: {"min": 100}.
package main

import (
	"errors"

	"weir"
)

type Config struct {
	Min *float64 `json:"min"`
}

func (c *Config) Check() error {
	if c.Min == nil {
		return errors.New("missing field `min`")
	}
	return nil
}

var (
	config Config
	amount = weir.MustPointer("/amount")
)

func init() {
	weir.Config(&config)
	weir.Filter(func(r *weir.Record) (bool, error) {
		order, err := r.JSON()
		if err != nil {
			return false, err
		}
		value, _ := amount.Get(order)
		n, ok := weir.Number(value)
		return ok && n > *config.Min, nil
	})
}

// weir calls the plugin through weir.Filter; main is not run.
func main() {}
