// Add a field to every JSON record, and count records per key in state:
// {"field": "source", "value": "weir"}.
package main

import (
	"errors"

	"weir"
)

var config struct {
	Field string `json:"field"`
	Value any    `json:"value"`
}

func init() {
	weir.Config(&config)
	weir.Transform(func(r *weir.Record, state *weir.State) ([]weir.Record, error) {
		seen, err := state.JSON("seen")
		if err != nil {
			return nil, err
		}
		count, _ := seen.(int64)
		if err := state.PutJSON("seen", count+1); err != nil {
			return nil, err
		}
		value, err := r.JSON()
		if err != nil {
			return nil, err
		}
		doc, ok := value.(*weir.Object)
		if !ok {
			return nil, errors.New("expected a JSON object")
		}
		doc.Set(config.Field, config.Value).Set("seen", count+1)
		return []weir.Record{r.WithJSON(doc)}, nil
	})
}

// weir calls the plugin through weir.Transform; main is not run.
func main() {}
