package cmdutil

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	"k8s.io/kubectl/pkg/cmd/get"

	"github.com/konlease/konlease/lock"
)

// Output formats besides the object printers' (json, yaml, jsonpath=...,
// custom-columns=..., ...).
const (
	// FormatTable is the default of list: the table.
	FormatTable = ""
	// FormatWide is the table with the wide columns.
	FormatWide = "wide"
	// FormatName prints one name per line.
	FormatName = "name"
	// FormatYAML is the default of get.
	FormatYAML = "yaml"
)

// outputFormatsHelp lists the -o values, with what the templated ones take.
const outputFormatsHelp = "json, yaml, kyaml, wide, name, jsonpath=TEMPLATE, jsonpath-as-json=TEMPLATE, jsonpath-file=FILE, " +
	"go-template=TEMPLATE, go-template-file=FILE, custom-columns=SPEC, custom-columns-file=FILE"

// PrintFlags are the output flags of list and get, as kubectl get has
// them: -o, --no-headers, --template and --allow-missing-template-keys. The
// printers are cli-runtime's and kubectl's own (table, JSON, YAML, JSONPath,
// Go templates, custom columns), so every format behaves as in kubectl.
type PrintFlags struct {
	// OutputFormat is -o.
	OutputFormat string
	// NoHeaders is --no-headers (tables and custom columns).
	NoHeaders bool

	defaultFormat string
	outputChanged func() bool
	jsonYAML      *genericclioptions.JSONYamlPrintFlags
	template      *genericclioptions.KubeTemplatePrintFlags
	columns       *get.CustomColumnsPrintFlags
}

// NewPrintFlags returns the flags with -o defaulting to defaultFormat
// (FormatTable for list, FormatYAML for get).
func NewPrintFlags(defaultFormat string) *PrintFlags {
	return &PrintFlags{
		OutputFormat:  defaultFormat,
		defaultFormat: defaultFormat,
		jsonYAML:      genericclioptions.NewJSONYamlPrintFlags(),
		template:      genericclioptions.NewKubeTemplatePrintFlags(),
		columns:       get.NewCustomColumnsPrintFlags(),
	}
}

// AddFlags adds the flags to cmd and completes -o with the formats.
func (p *PrintFlags) AddFlags(cmd *cobra.Command) {
	usage := "output format, one of: " + outputFormatsHelp
	if p.defaultFormat == FormatTable {
		usage += " (default: a table)" // pflag shows only non-empty defaults
	}
	cmd.Flags().StringVarP(&p.OutputFormat, "output", "o", p.defaultFormat, usage)
	cmd.Flags().BoolVar(&p.NoHeaders, "no-headers", false, "print tables and custom columns without the header line")
	p.template.AddFlags(cmd)
	// In koncli's words; the flags and their behaviour are kubectl's.
	if f := cmd.Flags().Lookup("template"); f != nil {
		f.Usage = "the template of -o go-template or jsonpath (or, with no -o, a Go template), or the file of -o go-template-file or jsonpath-file"
	}
	if f := cmd.Flags().Lookup("allow-missing-template-keys"); f != nil {
		f.Usage = "print nothing for a field a Go template or JSONPath names that is absent, rather than fail"
	}
	p.outputChanged = func() bool { return cmd.Flags().Changed("output") }
	_ = cmd.RegisterFlagCompletionFunc("output", func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, f := range p.AllowedFormats() {
			if strings.HasPrefix(f, toComplete) {
				out = append(out, f)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
}

// AllowedFormats are the -o values (the templated ones without their
// "=TEMPLATE"), for completion.
func (p *PrintFlags) AllowedFormats() []string {
	formats := []string{FormatWide, FormatName}
	formats = append(formats, p.jsonYAML.AllowedFormats()...)
	formats = append(formats, p.template.AllowedFormats()...)
	return append(formats, p.columns.AllowedFormats()...)
}

// Printer prints mutexes in the format that the flags chose.
type Printer struct {
	format        string
	noHeaders     bool
	withNamespace bool
	object        printers.ResourcePrinter
}

// ToPrinter checks the flags and returns their printer; withNamespace adds
// the NAMESPACE column to tables and qualifies names (list -A). It is
// called before anything is sent, so that a bad -o or template is a usage
// error that changed nothing.
func (p *PrintFlags) ToPrinter(withNamespace bool) (*Printer, error) {
	format := p.OutputFormat
	// As kubectl get: --template without -o means a Go template.
	if *p.template.TemplateArgument != "" && (p.outputChanged == nil || !p.outputChanged()) {
		format = "go-template"
	}
	pr := &Printer{format: format, noHeaders: p.NoHeaders, withNamespace: withNamespace}
	switch format {
	case FormatTable, FormatWide, FormatName:
		if format == FormatTable && p.defaultFormat != FormatTable {
			return nil, p.invalid(format)
		}
		return pr, nil
	}
	p.columns.NoHeaders = p.NoHeaders
	p.columns.TemplateArgument = *p.template.TemplateArgument
	for _, try := range []func(string) (printers.ResourcePrinter, error){p.jsonYAML.ToPrinter, p.template.ToPrinter, p.columns.ToPrinter} {
		obj, err := try(format)
		if genericclioptions.IsNoCompatiblePrinterError(err) {
			continue
		}
		if err != nil {
			return nil, Usagef("invalid -o %q: %w", p.OutputFormat, err)
		}
		pr.object = obj
		return pr, nil
	}
	return nil, p.invalid(p.OutputFormat)
}

func (p *PrintFlags) invalid(format string) error {
	return Usagef("invalid -o %q: want one of %s", format, outputFormatsHelp)
}

// IsTable reports whether the output is the table (or the wide table).
func (pr *Printer) IsTable() bool { return pr.format == FormatTable || pr.format == FormatWide }

// Print writes items to w. single is a get of one NAME: the object
// formats print that mutex, not a List of one. now is this machine's
// clock, for the table's relative times.
func (pr *Printer) Print(w io.Writer, items []lock.Status, single bool, now time.Time) error {
	refs := make([][2]string, len(items))
	for i, s := range items {
		refs[i] = [2]string{s.Namespace, s.Name}
	}
	return pr.print(w, refs, func() *metav1.Table { return mutexTable(items, now) }, func() (runtime.Object, error) { return viewObject(items, single) })
}

// print writes objects named refs (namespace, name) as the format says:
// the table that table makes, their names, or the object that obj makes.
func (pr *Printer) print(w io.Writer, refs [][2]string, table func() *metav1.Table, obj func() (runtime.Object, error)) error {
	switch {
	case pr.IsTable():
		tp := printers.NewTablePrinter(printers.PrintOptions{
			NoHeaders: pr.noHeaders, Wide: pr.format == FormatWide, WithNamespace: pr.withNamespace,
		})
		return tp.PrintObj(table(), w)
	case pr.format == FormatName:
		// Names as koncli's commands take them (not kubectl's
		// TYPE/NAME): 'koncli mutex list -o name | xargs koncli mutex
		// delete' works. Across namespaces, NAMESPACE/NAME.
		for _, r := range refs {
			name := r[1]
			if pr.withNamespace {
				name = Ref(r[0], r[1])
			}
			if _, err := fmt.Fprintln(w, name); err != nil {
				return err
			}
		}
		return nil
	}
	o, err := obj()
	if err != nil {
		return err
	}
	return pr.object.PrintObj(o, w)
}
