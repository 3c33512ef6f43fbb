// Test plugin: each order with its customer's country from the pipeline's `customers` table
// (null when the customer has no row); {"table": "other"} asks another table instead.
package main

import "weir"

// Config names the table to read.
type Config struct {
	Table string `json:"table"`
}

var config = Config{Table: "customers"}

var customer, country = weir.MustPointer("/customer"), weir.MustPointer("/country")

func init() {
	weir.Config(&config)
	weir.Transform(func(r *weir.Record, state *weir.State) ([]weir.Record, error) {
		order, err := r.JSON()
		if err != nil {
			return nil, err
		}
		id, _ := customer.Get(order)
		key, isText := id.(string)
		if !isText {
			key = string(weir.Marshal(id))
		}
		row, err := state.TableJSON(config.Table, key)
		if err != nil {
			return nil, err
		}
		var found any
		if row != nil {
			found, _ = country.Get(row)
		}
		if err := country.Put(order, found); err != nil {
			return nil, err
		}
		return []weir.Record{r.WithJSON(order)}, nil
	})
}

func main() {}
