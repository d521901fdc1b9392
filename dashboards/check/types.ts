// The types each dashboard in ../ must satisfy. `generate.mjs` writes, for every
// dashboard JSON, a TypeScript module whose object literals are typed with these, so
// `tsc` checks them field by field (excess properties included): the dashboard against
// @grafana/schema's `Dashboard`, and each panel's options and field config against the
// panel plugin's own schema types from the same package.
import type {
  AnnotationContainer,
  AnnotationQuery,
  DataQuery,
  DataSourceRef,
  Dashboard,
  Panel,
  RowPanel,
  FieldConfigSource,
} from '@grafana/schema';
import type * as TimeSeries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';
import type * as Stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as BarGauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as Table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as NodeGraph from '@grafana/schema/dist/esm/raw/composable/nodegraph/panelcfg/x/NodeGraphPanelCfg_types.gen';

/** A value as JSON spells it: string enums become their string literals. */
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

/**
 * The whole dashboard. Annotation queries are Prometheus queries: the schema's
 * `AnnotationQuery` takes the data source's query type as its parameter.
 */
export type CheckedDashboard = Json<
  Omit<Dashboard, 'annotations'> & {
    annotations?: Omit<AnnotationContainer, 'list'> & { list?: Array<AnnotationQuery<PrometheusQuery>> };
  }
>;

/** A Prometheus query as Grafana stores it in `targets`. */
export interface PrometheusQuery extends DataQuery {
  datasource?: DataSourceRef;
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  editorMode?: 'code' | 'builder';
  interval?: string;
}

/** Options and custom field config of every panel type the dashboards use. */
interface Plugins {
  timeseries: { options: TimeSeries.Options; custom: TimeSeries.FieldConfig };
  stat: { options: Stat.Options; custom: Record<string, never> };
  bargauge: { options: BarGauge.Options; custom: Record<string, never> };
  table: { options: Table.Options; custom: Table.FieldConfig };
  nodegraph: { options: NodeGraph.Options; custom: Record<string, never> };
}

export type PanelType = keyof Plugins;

/** A panel of type `K`, with its plugin's options, custom config and Prometheus targets. */
export type CheckedPanel<K extends PanelType> = Json<
  Omit<Panel, 'type' | 'options' | 'targets' | 'fieldConfig'> & {
    type: K;
    options: Plugins[K]['options'];
    targets: PrometheusQuery[];
    fieldConfig: Omit<FieldConfigSource, 'defaults'> & {
      defaults: Omit<FieldConfigSource['defaults'], 'custom'> & { custom?: Plugins[K]['custom'] };
    };
  }
>;

/** A row (its panels are checked one by one as well). */
export type CheckedRow = Json<RowPanel>;
